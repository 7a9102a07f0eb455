"""The image's Dockerfile (no Docker engine here, so its structure): what Kubernetes and the chart rely on."""

from __future__ import annotations

import itertools
import posixpath
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.chart.dockerfile import Stage, env_of, exec_form, parse_dockerfile
from tests.chart.render import CHART, render, values_with
from tests.support.dependencies import runtime_requirements, tools_for_tests

ROOT = CHART.parents[1]
ARGS, STAGES = parse_dockerfile(ROOT / "Dockerfile")
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def config_arg() -> str:
    args: list[str] = render(values_with()).container()["args"]
    return next(a.removeprefix("--config=") for a in args if a.startswith("--config="))


def copy_sources(stage: Stage) -> Iterator[str]:
    for argument in stage.all("COPY"):
        if not argument.startswith("--from="):
            yield from argument.split()[:-1]


def test_the_image_is_built_in_stages_on_one_slim_python_base() -> None:
    assert len(STAGES) >= 2 and all(stage.name for stage in STAGES)
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", RUNTIME.base), RUNTIME.base
    # One base for both: the virtualenv's interpreter links into the base image's Python.
    assert BUILD.base == RUNTIME.base


def test_the_runtime_stage_holds_only_the_built_virtualenv() -> None:
    earlier = {stage.name for stage in STAGES[:-1]}
    copies = RUNTIME.all("COPY")
    assert copies and all(
        re.match(r"--from=(\S+) ", c) and c.split()[0].removeprefix("--from=") in earlier for c in copies
    )
    assert not any(re.search(r"\b(pip|apt-get|apk)\b", run) for run in RUNTIME.all("RUN"))


def test_dependencies_are_installed_from_the_lock() -> None:
    assert "constraints.txt" in set(copy_sources(BUILD))
    installs = [run for run in BUILD.all("RUN") if "pip install" in run]
    assert installs and all(re.search(r"(--constraint|-c) constraints\.txt", run) for run in installs)


def test_the_lock_pins_every_runtime_dependency_of_the_image() -> None:
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert runtime_requirements() - pinned == set()


def _pip_installs(stage: Stage) -> list[list[str]]:
    """The arguments of every `pip install` the stage runs (up to the next `&&`, `;` or `|`)."""
    found = []
    for run in stage.all("RUN"):
        words = shlex.split(run)
        for at in (i for i, word in enumerate(words) if word.endswith("pip") and words[i + 1 : i + 2] == ["install"]):
            rest = list(itertools.takewhile(lambda word: word not in ("&&", ";", "|", "||"), words[at + 2 :]))
            found.append(rest)
    return found


def test_the_image_holds_the_runtime_dependencies_and_no_test_tool() -> None:
    """The image's dependency list is what its one `pip install` brings: the package itself (`.`, no extra, no other
    requirement) with the lock, so its runtime dependencies; and no test tool is among those."""
    installs = [*_pip_installs(BUILD), *_pip_installs(RUNTIME)]
    assert installs == [["--constraint", "constraints.txt", "."]], installs
    assert not any("pip" in line for stage in STAGES[1:] for line in stage.all("RUN")), "pip runs only in the build"
    runtime = runtime_requirements()
    assert runtime & tools_for_tests() == set(), "a test tool is a runtime dependency of the image"
    assert {"uvicorn", "pyjwt", "limits"} <= runtime  # the set is read (a broken reader would find nothing)


def test_the_image_runs_as_the_numeric_non_root_user_the_chart_expects() -> None:
    user = RUNTIME.last("USER")
    assert user is not None and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), user
    uid, _, gid = user.partition(":")
    pod = render(values_with()).pod["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["runAsNonRoot"]) == (int(uid), int(gid or uid), True)


def test_the_entrypoint_is_sidecar_serve_as_the_chart_runs_it() -> None:
    entrypoint = RUNTIME.last("ENTRYPOINT")
    assert entrypoint is not None
    assert exec_form(entrypoint) == ["sidecar", "serve"] == render(values_with()).container()["command"]
    assert RUNTIME.last("CMD") is None  # the chart passes every flag; a CMD would only be replaced


def test_the_policy_is_read_from_the_path_the_chart_mounts() -> None:
    rendered = render(values_with())
    mount = next(m for m in rendered.container()["volumeMounts"] if m["name"] == "policy")
    assert env_of(RUNTIME)["SIDECAR_CONFIG"] == config_arg() == "/etc/sidecar/policy.yaml"
    assert posixpath.dirname(config_arg()) == mount["mountPath"]


def test_nothing_is_written_at_run_time_so_a_read_only_root_works() -> None:
    assert env_of(RUNTIME)["PYTHONDONTWRITEBYTECODE"] == "1"
    assert any("compileall" in run for run in BUILD.all("RUN"))  # bytecode exists before the root is read-only


def test_the_exposed_ports_are_the_charts_container_ports() -> None:
    ports = {p["name"]: p["containerPort"] for p in render(values_with()).container()["ports"]}
    assert RUNTIME.last("EXPOSE") == f"{ports['http']} {ports['admin']}"


def test_the_build_context_is_an_allow_list_of_what_the_dockerfile_copies() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == set(copy_sources(BUILD))
    assert all((ROOT / path).exists() for path in allowed)


def test_the_base_image_is_pinned_by_a_tag_naming_python_and_debian() -> None:
    """Never `latest` or a bare `python:3`: the tag names Python's minor version and Debian's release."""
    assert re.fullmatch(r"python:3\.\d+-slim-[a-z]+", ARGS["PYTHON_IMAGE"]), ARGS["PYTHON_IMAGE"]


DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_a_digest_pins_the_base_image_as_the_dockerfile_documents(tmp_path: Path) -> None:
    pinned = f"{ARGS['PYTHON_IMAGE']}@{DIGEST}"
    text = (ROOT / "Dockerfile").read_text()
    assert f"make image PYTHON_IMAGE={ARGS['PYTHON_IMAGE']}@sha256:" in text  # the documented way
    dry_run = subprocess.run(
        ["make", "-s", "-n", "image", f"PYTHON_IMAGE={pinned}"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert shlex.split(dry_run.stdout) == [
        "docker", "build", "--build-arg", f"PYTHON_IMAGE={pinned}", "-t", f"auth-sidecar:{version}", ".",
    ]  # fmt: skip
    # Written into the ARG instead, both stages build on exactly that image.
    written = tmp_path / "Dockerfile"
    written.write_text(text.replace(f"ARG PYTHON_IMAGE={ARGS['PYTHON_IMAGE']}\n", f"ARG PYTHON_IMAGE={pinned}\n"))
    stages = parse_dockerfile(written)[1]
    assert [stage.base for stage in stages] == [pinned] * len(stages)


def test_make_image_builds_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    dry_run = subprocess.run(["make", "-s", "-n", "image"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert dry_run.stdout.strip() == f"docker build -t auth-sidecar:{version} ."
