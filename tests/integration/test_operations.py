"""Operating the sidecar: hot reload under traffic, audit mode, graceful shutdown, workers, access logs."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.metrics import sample
from tests.support.servers import SidecarProcess, ThreadServer

OPEN = """\
version: 1
routes:
  - name: first
    match: {{ path_prefix: /first, methods: [GET] }}
    upstream: {upstream}/first
    allow: anyone
"""
WITH_SECOND = (
    OPEN
    + """\
  - name: second
    match: {{ path_prefix: /second, methods: [GET] }}
    upstream: {upstream}/second
    allow: anyone
"""
)


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class Traffic:
    """Requests in a loop on a thread until stopped (bounded: at most `limit` requests)."""

    def __init__(self, url: str, limit: int = 20_000, headers: dict[str, str] | None = None) -> None:
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._more = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(url, limit, headers or {}), daemon=True)
        self._thread.start()

    def _run(self, url: str, limit: int, headers: dict[str, str]) -> None:
        with httpx.Client(trust_env=False, timeout=10, headers=headers) as http:
            while not self._stop.is_set() and len(self.statuses) < limit:
                status = http.get(url).status_code
                with self._more:
                    self.statuses.append(status)
                    self._more.notify_all()

    def wait_for_more(self, count: int, timeout: float = 10.0) -> None:
        """Until `count` requests have been answered (raises after `timeout`)."""
        with self._more:
            assert self._more.wait_for(lambda: len(self.statuses) >= count, timeout), "the traffic stopped"

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.statuses


@pytest.fixture()
def reloading(tmp_path: Path, upstream: ThreadServer) -> Iterator[tuple[SidecarProcess, Path]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN.format(upstream=upstream.url))
    sidecar = SidecarProcess(policy, {}, ("--drain-delay", "0", "--reload-interval", "0.1")).start()
    yield sidecar, policy
    assert sidecar.stop() == 0


def test_reload_under_traffic_loses_no_request(reloading: tuple[SidecarProcess, Path], upstream: ThreadServer) -> None:
    sidecar, policy = reloading
    traffic = Traffic(sidecar.proxy + "/first")
    with httpx.Client(base_url=sidecar.proxy, trust_env=False) as http:
        assert http.get("/second").status_code == 404
        for _ in range(3):  # several swaps while requests flow
            write_atomically(policy, WITH_SECOND.format(upstream=upstream.url))
            sidecar.wait_for_log("policy reloaded", trigger="file")
            assert http.get("/second").status_code == 200
            write_atomically(policy, OPEN.format(upstream=upstream.url))
            sidecar.wait_for_log("policy reloaded", trigger="file")
            assert http.get("/second").status_code == 404
    statuses = traffic.stop()
    assert statuses and set(statuses) == {200}


def test_a_bad_policy_keeps_the_old_one(reloading: tuple[SidecarProcess, Path], upstream: ThreadServer) -> None:
    sidecar, policy = reloading
    good = WITH_SECOND.format(upstream=upstream.url)
    write_atomically(policy, good)
    sidecar.wait_for_log("policy reloaded")
    write_atomically(policy, good.replace("allow: anyone", "allow: everyone", 1))
    failure = sidecar.wait_for_log("policy reload failed; keeping the current policy")
    assert any(error.startswith(f"{policy}:6: routes[0].allow") for error in failure["errors"])
    with httpx.Client(trust_env=False) as http:
        assert http.get(sidecar.proxy + "/second").status_code == 200
        admin = httpx.Client(base_url=sidecar.admin, trust_env=False)
        assert sample(admin, "sidecar_config_reloads_total", result="error") == 1
        assert sample(admin, "sidecar_config_reloads_total", result="success") == 1
        live = hashlib.sha256(good.encode()).hexdigest()[:12]
        assert sample(admin, "sidecar_config_info", hash=live) == 1
        admin.close()


def test_sighup_reloads(reloading: tuple[SidecarProcess, Path]) -> None:
    sidecar, _ = reloading
    sidecar.send_signal(signal.SIGHUP)
    assert sidecar.wait_for_log("policy reloaded")["trigger"] == "sighup"


def test_configmap_symlink_swap_is_seen(tmp_path: Path, upstream: ThreadServer) -> None:
    """Kubernetes mounts a ConfigMap as policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>, and updates it by
    swapping the ..data symlink: the file the sidecar opened is never written."""
    mount = tmp_path / "config"
    mount.mkdir()
    (mount / "..2026_11_26_v1").mkdir()
    (mount / "..2026_11_26_v1" / "policy.yaml").write_text(OPEN.format(upstream=upstream.url))
    (mount / "..data").symlink_to("..2026_11_26_v1")
    (mount / "policy.yaml").symlink_to("..data/policy.yaml")
    sidecar = SidecarProcess(mount / "policy.yaml", {}, ("--drain-delay", "0", "--reload-interval", "0.1")).start()
    try:
        (mount / "..2026_11_26_v2").mkdir()
        (mount / "..2026_11_26_v2" / "policy.yaml").write_text(WITH_SECOND.format(upstream=upstream.url))
        (mount / "..data_tmp").symlink_to("..2026_11_26_v2")
        os.replace(mount / "..data_tmp", mount / "..data")
        sidecar.wait_for_log("policy reloaded", trigger="file")
        assert httpx.get(sidecar.proxy + "/second", trust_env=False).status_code == 200
    finally:
        assert sidecar.stop() == 0


PAYROLL_HEAD = """\
version: 1
providers:
  contoso:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
routes:
  - name: payroll
    match: { path: /payroll, methods: [GET] }
    upstream: ${UPSTREAM}/payroll
    allow:
      - provider: contoso
"""
PAYROLL_USERS = "        users: [lisa@contoso.com]\n"  # without it, the half file lets every contoso user in


@pytest.mark.alone  # the 3 s gap must stay under the 5 s settle time: a stalled test thread would stretch it
def test_a_policy_written_in_place_in_two_writes_is_never_used_half_written(
    tmp_path: Path, sidecar_env: dict[str, str], issuer: DemoIssuer
) -> None:
    """A copy that lands in two writes three seconds apart (a slow `cp`, a sync tool): between them the file is a
    valid policy that allows any contoso user. The sidecar polls 10 times a second and must not load it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN.format(upstream=sidecar_env["UPSTREAM"]))
    args = ("--drain-delay", "0", "--reload-interval", "0.1")  # --reload-settle: its default, 5 s
    sidecar = SidecarProcess(policy, sidecar_env, args).start()
    claims = {"aud": "api://trigger-gateway", "oid": "mallory-oid", "upn": "mallory@contoso.com"}
    mallory = issuer.mint(CONTOSO_TENANT, claims)
    lisa = issuer.mint(CONTOSO_TENANT, {**claims, "oid": "lisa-oid", "upn": "lisa@contoso.com"})
    try:
        traffic = Traffic(sidecar.proxy + "/payroll", headers={"Authorization": f"Bearer {mallory}"})
        with policy.open("w") as file:  # in place: the same inode, truncated, then written twice
            file.write(PAYROLL_HEAD)
            file.flush()
            gap_end = time.monotonic() + 3.0  # the scenario's gap; nothing waits on it to synchronise
            while time.monotonic() < gap_end and len(traffic.statuses) < 20_000:
                traffic.wait_for_more(len(traffic.statuses) + 1)
            file.write(PAYROLL_USERS)
        reloaded = sidecar.wait_for_log("policy reloaded", trigger="file")
        statuses = traffic.stop()
        assert reloaded["hash"] == hashlib.sha256((PAYROLL_HEAD + PAYROLL_USERS).encode()).hexdigest()[:12]
        assert statuses and 200 not in statuses, statuses.count(200)  # 404 before, 403 after: never let in
        with httpx.Client(base_url=sidecar.proxy, trust_env=False) as http:
            assert http.get("/payroll", headers={"Authorization": f"Bearer {mallory}"}).status_code == 403
            assert http.get("/payroll", headers={"Authorization": f"Bearer {lisa}"}).status_code == 200
    finally:
        assert sidecar.stop() == 0
    assert sum('"policy reloaded"' in line for line in sidecar.lines) == 1


def test_audit_flag_forwards_would_be_refusals(sidecar_env: dict[str, str], issuer: DemoIssuer) -> None:
    from tests.integration.conftest import POLICY

    sidecar = SidecarProcess(POLICY, sidecar_env, ("--drain-delay", "0", "--audit")).start()
    try:
        with httpx.Client(trust_env=False) as http:
            assert http.post(sidecar.proxy + "/flows/payroll").status_code == 200  # no token, yet forwarded
            admin = httpx.Client(base_url=sidecar.admin, trust_env=False)
            assert sample(admin, "sidecar_rejections_total", route="payroll", reason="missing_token", mode="audit") == 1
            assert http.get(sidecar.proxy + "/nowhere").status_code == 404  # nowhere to forward to
            admin.close()
        line = sidecar.wait_for_log("request", route="payroll")
        assert line["decision"] == "audit_forward" and line["mode"] == "audit" and line["reason"] == "missing_token"
    finally:
        assert sidecar.stop() == 0


def test_sigterm_drains_and_lets_a_streaming_upload_finish(sidecar_env: dict[str, str], issuer: DemoIssuer) -> None:
    from tests.integration.conftest import POLICY

    sidecar = SidecarProcess(POLICY, sidecar_env, ("--drain-delay", "2", "--grace", "20")).start()
    release = threading.Event()
    chunk = b"x" * 65536
    result: dict[str, object] = {}
    first_sent = threading.Event()

    def body() -> Iterator[bytes]:
        yield chunk
        first_sent.set()
        release.wait(30)
        for _ in range(63):
            yield chunk

    def upload() -> None:
        minted = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": "uploader"})
        with httpx.Client(trust_env=False, timeout=60) as http:
            response = http.put(
                sidecar.proxy + "/files/upload", content=body(), headers={"Authorization": f"Bearer {minted}"}
            )
            result["status"], result["echo"] = response.status_code, response.json()

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    assert first_sent.wait(30)
    sidecar.send_signal(signal.SIGTERM)
    sidecar.wait_for_log("draining")
    with httpx.Client(trust_env=False, timeout=10) as http:
        assert http.get(sidecar.admin + "/readyz").status_code == 503
        assert http.get(sidecar.proxy + "/public/still-serving").status_code == 200  # the drain delay
    sidecar.wait_for_log("closing listeners")
    release.set()  # the upload goes on after the listener has stopped accepting
    uploader.join(timeout=60)
    assert result["status"] == 200
    assert result["echo"]["body_bytes"] == 64 * 65536  # type: ignore[index]
    assert sidecar.stop() == 0


def answered_by(sidecar: SidecarProcess, worker: int, path: str) -> dict[str, object]:
    """The access line of a request to `path` that `worker` answered: new connections until it takes one (bounded)."""
    for _ in range(2_000):
        with httpx.Client(trust_env=False, timeout=10) as fresh:
            fresh.get(sidecar.proxy + path)
        line = sidecar.wait_for_log("request", path=path)
        if line["pid"] == worker:
            return line
    raise AssertionError(f"worker {worker} took none of 2000 connections")


def kill_one_worker_while_the_file_is_invalid(sidecar: SidecarProcess, policy: Path) -> int:
    """Break the file (every worker keeps its policy), SIGKILL one worker; returns the replacement's pid once it is
    ready."""
    workers = {int(line["pid"]) for line in sidecar.wait_for_logs("ready", 2)}
    write_atomically(policy, "version: 1\nroutes: [this is not a route]\n")
    sidecar.wait_for_logs("policy reload failed; keeping the current policy", 2)
    os.kill(min(workers), signal.SIGKILL)
    (replacement,) = {int(line["pid"]) for line in sidecar.wait_for_logs("ready", 3)} - workers
    return replacement


def test_a_worker_restarted_while_the_file_is_invalid_serves_the_last_good_policy_and_metrics_files_go_at_stop(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN.format(upstream=upstream.url))
    args = ("--drain-delay", "0", "--workers", "2", "--reload-interval", "0.1")
    sidecar = SidecarProcess(policy, {}, args).start()
    try:
        metrics_dir = Path(str(sidecar.wait_for_logs("workers started", 1)[0]["metrics_dir"]))
        replacement = kill_one_worker_while_the_file_is_invalid(sidecar, policy)
        line = answered_by(sidecar, replacement, "/first")
        assert (line["status"], line["route"], line["decision"]) == (200, "first", "allow")  # decided as before
        assert list(metrics_dir.glob("*.db"))
    finally:
        assert sidecar.stop() == 0
    assert not metrics_dir.exists()  # a directory of its own: removed whole at stop


def test_the_last_good_policy_is_the_newest_that_loaded_and_a_given_metrics_directory_is_emptied(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN.format(upstream=upstream.url))
    metrics_dir = tmp_path / "metrics"  # an emptyDir: the sidecar's to write in, not to remove
    args = ("--drain-delay", "0", "--workers", "2", "--reload-interval", "0.1")
    sidecar = SidecarProcess(policy, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, args).start()
    try:
        sidecar.wait_for_logs("ready", 2)
        write_atomically(policy, WITH_SECOND.format(upstream=upstream.url))
        sidecar.wait_for_logs("policy reloaded", 2)
        sidecar.wait_for_logs("policy kept for worker restarts", 1)
        replacement = kill_one_worker_while_the_file_is_invalid(sidecar, policy)
        line = answered_by(sidecar, replacement, "/second")  # a route only the second version has
        assert (line["status"], line["route"], line["decision"]) == (200, "second", "allow")
    finally:
        assert sidecar.stop() == 0
    assert metrics_dir.is_dir() and not list(metrics_dir.iterdir())


def test_workers_share_the_port_and_metrics_add_up(tmp_path: Path, upstream: ThreadServer) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN.format(upstream=upstream.url))
    sidecar = SidecarProcess(policy, {}, ("--drain-delay", "0", "--workers", "2")).start()
    try:
        workers = {line["pid"] for line in sidecar.wait_for_logs("ready", 2)}
        assert len(workers) == 2
        pids: set[object] = set()
        sent = 0
        while len(pids) < 2 and sent < 2_000:  # until both workers have answered (bounded)
            for _ in range(8):  # a new connection each, so the kernel may hand it to either worker
                with httpx.Client(trust_env=False, timeout=10) as fresh:
                    assert fresh.get(sidecar.proxy + "/first").status_code == 200
                sent += 1
                pids.add(sidecar.wait_for_log("request")["pid"])
        assert len(pids) == 2
        with httpx.Client(trust_env=False, timeout=10) as http:
            for _ in range(4):  # whichever worker answers the scrape, the totals are the whole process group's
                text = http.get(sidecar.admin + "/metrics").text
                assert f'sidecar_requests_total{{code="200",method="GET",route="first"}} {float(sent)}' in text
    finally:
        assert sidecar.stop() == 0
