"""The guides' commands run as written: docs/entra.md and docs/getting-started.md, top to bottom, against the demo
token issuer where the guide needs Microsoft Entra.

The extraction rule. A page is read top to bottom; a fenced block's kind is the HTML comment on the line right
before its fence:
- `<!-- file: NAME -->`: the block is written to NAME in the page's scratch directory (a policy, a cases file).
- `<!-- background -->`: a command started in the background (`sidecar serve`); it must log `ready`, and is stopped
  by its PID when the page is done.
- `<!-- needs: WHAT -->`: a block this machine cannot run: `entra` (the Azure CLI `az`, or serving a policy whose
  keys are a real tenant's), `power-automate` (the HTTP action's JSON: parsed here), `a terminal of its own`
  (`make demo`, whose walk-through tests/integration/test_cli.py runs).
- `<!-- fragment -->`, or no comment on a block that is not ```sh: shown for reading (YAML and JSON must parse).
- no comment, a ```sh block: run with `bash -eu -o pipefail` in the scratch directory (it stands for the clone:
  `sidecar/` and `config/` are links to this one's), `sidecar` on the PATH; it
  must exit 0, and each `# expect: TEXT` at the end of a line must appear in its output, in that order.
A variable a block assigns at the start of a line (`NAME=...`, `export NAME=...`, `read ... NAME`) is passed to
every later block.

What stands in for Entra (the only changes made to what the page says):
- `https://login.microsoftonline.com` and `https://sts.windows.net`, in commands and files: the demo issuer
  (sidecar/demo/issuer.py, Entra's paths, its tenant 11111111-2222-3333-4444-555555555555);
- `cloud: public` in a file: `cloud: public, authority: "<the demo issuer>"` (the one key a real tenant needs not);
- the calling app's client id `7c9e8f2a-1111-4a4a-9b9b-0123456789ab`: `payroll-app`, the demo issuer's app holding
  `Payroll.Invoke`; its secret is what a `read` gets on standard input;
- the trigger host `https://prod-00.westeurope.logic.azure.com:443`: the demo echo upstream;
- the ports `127.0.0.1:8080` and `127.0.0.1:9901`: free loopback ports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import yaml

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.servers import LineReader, ThreadServer, free_closed_port
from tests.test_docs import ROOT, Block, blocks

pytestmark = pytest.mark.integration

PAGES: Final = [ROOT / "docs" / "entra.md", ROOT / "docs" / "getting-started.md"]
CLIENT_ID: Final = "7c9e8f2a-1111-4a4a-9b9b-0123456789ab"
DEMO_CLIENT: Final = "payroll-app"
DEMO_SECRET: Final = "payroll-app-secret"
NEEDS: Final = ("entra", "power-automate", "a terminal of its own")
ASSIGNED: Final = re.compile(
    r"^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=|\bread\b[^\n;]*?\b([A-Z_][A-Z0-9_]*)\s*(?:;|$)", re.M
)
EXPECT: Final = re.compile(r"#\s*expect:\s*(.+?)\s*$", re.M)


@dataclass
class Run:
    """One page being followed: its scratch directory, what stands in for Entra, and what the blocks assigned."""

    directory: Path
    substitutions: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    background: list[tuple[subprocess.Popen[str], LineReader]] = field(default_factory=list)

    def text(self, body: str) -> str:
        for written, stands_in in self.substitutions.items():
            body = body.replace(written, stands_in)
        return body

    def environ(self) -> dict[str, str]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        return {**os.environ, "PATH": path, **self.env}


def kind(block: Block) -> str:
    found = re.fullmatch(r"<!--\s*(.*?)\s*-->", block.marker)
    return found.group(1) if found else ""


def run_block(run: Run, block: Block) -> str:
    """Run one command block; what it assigns joins the environment of the next ones. Returns its output."""
    assigned = sorted({name for pair in ASSIGNED.findall(block.body) for name in pair if name})
    state = run.directory.parent / "assigned"  # outside the scratch directory the page's commands see
    report = "".join(
        f'[ -z "${{{name}+set}}" ] || printf "%s\\0%s\\0" {name} "${name}" >>"{state}";' for name in assigned
    )
    script = f"{run.text(block.body)}\n{report}"
    state.write_bytes(b"")
    result = subprocess.run(
        ["bash", "-eu", "-o", "pipefail", "-c", script],
        cwd=run.directory,
        env=run.environ(),
        input=DEMO_SECRET + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    values = state.read_text().split("\0")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.where}: exit {result.returncode}\n{script}\n{output}"
    run.env.update(dict(zip(values[0:-1:2], values[1::2], strict=True)))
    return output


def check_expectations(block: Block, output: str) -> None:
    position = 0
    for wanted in EXPECT.findall(block.body):
        found = output.find(wanted.strip("'"), position)
        assert found >= 0, f"{block.where}: {wanted!r} not in the output (in order):\n{output}"
        position = found + len(wanted)


def start_background(run: Run, block: Block) -> None:
    process = subprocess.Popen(
        ["bash", "-c", f"exec {run.text(block.body).strip()}"],
        cwd=run.directory,
        env=run.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = LineReader(process.stdout)
    run.background.append((process, output))
    output.wait_for(lambda line: line.split()[2:3] == ["ready"] or '"message":"ready"' in line, timeout=60)


def stop_background(run: Run) -> list[str]:
    lines = []
    for process, output in run.background:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        output.join()
        assert process.stdout is not None
        process.stdout.close()
        lines += output.lines
    return lines


def check_marked(block: Block) -> None:
    """A block marked as not runnable here really needs what it says."""
    needs = kind(block).removeprefix("needs: ")
    assert needs in NEEDS, f"{block.where}: unknown marker {block.marker}"
    if needs == "entra":
        assert re.search(r"(^|\n)\s*(\w+=\$\()?az |sidecar serve", block.body), f"{block.where}: not Entra's"
    elif needs == "power-automate":
        assert json.loads(block.body)["inputs"]["authentication"]["type"] == "ActiveDirectoryOAuth"
    else:
        assert block.body.strip() == "make demo"


def follow(page: Path, run: Run) -> list[Block]:
    """Every block of `page`, in order: written, run, started, or checked as marked. Returns the blocks run."""
    assert shutil.which("curl"), "curl is not installed: run `bash tests/peers/install.sh` (or `make test`)"
    ran = []
    for block in blocks(page):
        marker = kind(block)
        if marker.startswith("file: "):
            (run.directory / marker.removeprefix("file: ")).write_text(run.text(block.body))
        elif marker.startswith("needs: "):
            check_marked(block)
        elif marker == "background":
            start_background(run, block)
            ran.append(block)
        elif marker == "" and block.lang == "sh":
            check_expectations(block, run_block(run, block))
            ran.append(block)
        else:
            assert marker in ("", "fragment"), f"{block.where}: unknown marker {block.marker}"
            json.loads(block.body) if block.lang == "json" else yaml.safe_load(block.body)
    return ran


@pytest.fixture
def run(tmp_path: Path, issuer_server: tuple[DemoIssuer, ThreadServer], upstream: ThreadServer) -> Iterator[Run]:
    _, issuer = issuer_server
    substitutions = {
        "https://login.microsoftonline.com": issuer.url,
        "https://sts.windows.net": issuer.url,
        "cloud: public": f'cloud: public, authority: "{issuer.url}"',
        CLIENT_ID: DEMO_CLIENT,
        "https://prod-00.westeurope.logic.azure.com:443": upstream.url,
        "127.0.0.1:8080": f"127.0.0.1:{free_closed_port()}",
        "127.0.0.1:9901": f"127.0.0.1:{free_closed_port()}",
    }
    (tmp_path / "page").mkdir()
    for shared in ("sidecar", "config"):  # the guides name files of the clone by these relative paths
        (tmp_path / "page" / shared).symlink_to(ROOT / shared)
    followed = Run(tmp_path / "page", substitutions)
    try:
        yield followed
    finally:
        stop_background(followed)


def test_the_entra_guide_runs_from_a_token_to_a_served_policy(run: Run) -> None:
    ran = follow(ROOT / "docs" / "entra.md", run)
    lines = stop_background(run)
    run.background.clear()
    commands = "\n".join(block.body for block in ran)
    for step in ("oauth2/v2.0/token", "sidecar check", "--claims", "--token -", "sidecar test", "sidecar serve"):
        assert step in commands, f"docs/entra.md no longer runs {step!r}"
    assert run.env["TENANT_ID"] == CONTOSO_TENANT
    assert run.env["TOKEN"].count(".") == 2  # the client-credentials curl got a JWT from the demo issuer
    # The served policy decided the guide's two calls, and logged neither the token nor the trigger's signature.
    assert any("allow" in line and "/flows/payroll" in line for line in lines), lines
    assert not [line for line in lines if "eyJ" in line or "s3cr3t" in line]


def test_the_getting_started_guide_runs(run: Run) -> None:
    ran = follow(ROOT / "docs" / "getting-started.md", run)
    commands = "\n".join(block.body for block in ran)
    for step in ("sidecar/demo/cases.yaml", "sidecar check", "sidecar explain", "sidecar test"):
        assert step in commands, f"docs/getting-started.md no longer runs {step!r}"


def test_only_blocks_that_need_entra_power_automate_or_a_terminal_are_left_out() -> None:
    marked = [block for page in PAGES for block in blocks(page) if kind(block).startswith("needs: ")]
    for block in marked:
        check_marked(block)
    assert {kind(block) for block in marked} == {f"needs: {needs}" for needs in NEEDS}
    bad = Block(marked[0].page, 1, "sh", "sidecar check --config policy.yaml", "<!-- needs: entra -->")
    with pytest.raises(AssertionError):
        check_marked(bad)
