"""The docs hold together: every relative link resolves, and every policy they show passes `sidecar check`.

Links: every `[text](target)` outside code in README.md, SECURITY.md, docs/*.md, the chart's and bench's READMEs whose
target is not a URL must name a file or folder of this repository, and a `#anchor` must be a heading of the page
it points to (GitHub's slugs: lower case, punctuation dropped, spaces to `-`, `-1`, `-2` for repeats).

Policies: every ```yaml block of README.md and docs/*.md must parse as YAML; one whose top level has `routes` or
`providers` is a policy and must load as `sidecar check` loads it (no error, no warning), unless the line right
before its fence is `<!-- fragment -->` (a piece of a policy shown alone: then it is only parsed). `${VAR}` values
are given a value that fits their name, as an operator's environment would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sidecar.observe.metrics import Metrics
from sidecar.policy.load import PolicyError, parse_policy
from sidecar.reasons import Reason, outcome

ROOT: Final = Path(__file__).resolve().parent.parent
PAGES: Final = sorted(
    [
        ROOT / "README.md",
        ROOT / "SECURITY.md",
        ROOT / "charts" / "auth-sidecar" / "README.md",
        ROOT / "bench" / "README.md",
    ]
    + list((ROOT / "docs").glob("*.md"))
)
GUIDES: Final = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE: Final = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
LINK: Final = re.compile(r"(?<!!)\[[^\]\n]*\]\((?P<target>[^)\s]+)\)")
HEADING: Final = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$", re.M)
FRAGMENT: Final = "<!-- fragment -->"
URL_VALUE: Final = "https://prod-00.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=s3cr3t"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    marker: str  # the HTML comment on the line before the fence, or ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    text = page.read_text()
    for found in FENCE.finditer(text):
        line = text.count("\n", 0, found.start()) + 1
        before = text[: found.start()].rstrip(" ").removesuffix("\n").rsplit("\n", 1)[-1].strip()
        marker = before if before.startswith("<!--") else ""
        body = "\n".join(row.removeprefix(found["indent"]) for row in found["body"].split("\n"))
        yield Block(page, line, found["lang"], body, marker)


def unfenced(text: str) -> str:
    """The text outside fenced blocks (line numbers kept), where a heading is a heading."""
    return FENCE.sub(lambda found: "\n" * found.group(0).count("\n"), text)


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code, where a link is a link."""
    return re.sub(r"`[^`\n]*`", "``", unfenced(text))


def slug(title: str) -> str:
    """GitHub's heading anchor: markup and punctuation dropped, lower case, spaces to hyphens."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.finditer(unfenced(page.read_text())):
        base = slug(heading["title"])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links() -> list[tuple[Path, int, str]]:
    found = []
    for page in PAGES:
        text = prose(page.read_text())
        for link in LINK.finditer(text):
            target = link["target"]
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
                continue
            found.append((page, text.count("\n", 0, link.start()) + 1, target))
    return found


def broken(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, does not resolve; None when it does."""
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.is_relative_to(ROOT):
        return f"{path} is outside the repository"
    if not resolved.exists():
        return f"{path} does not exist"
    if anchor and resolved.suffix != ".md":
        return f"#{anchor} on {path}, which is not a Markdown page"
    if anchor and anchor not in anchors(resolved):
        return f"{resolved.relative_to(ROOT)} has no heading #{anchor}"
    return None


LINKS: Final = links()


def test_the_docs_link_to_each_other() -> None:
    # The checks below are only worth something if they find the links: the README links into docs/ and back.
    assert len(LINKS) >= 100
    assert {target.split("#")[0] for page, _, target in LINKS if page.name == "README.md" and page.parent == ROOT} >= {
        "docs/getting-started.md",
        "docs/entra.md",
        "SECURITY.md",
    }


@pytest.mark.parametrize(("page", "line", "target"), LINKS, ids=[f"{p.relative_to(ROOT)}:{n}:{t}" for p, n, t in LINKS])
def test_every_relative_link_resolves(page: Path, line: int, target: str) -> None:
    assert broken(page, target) is None, f"{page.relative_to(ROOT)}:{line}: {target}: {broken(page, target)}"


def test_a_broken_link_is_found() -> None:
    readme = ROOT / "README.md"
    assert broken(readme, "docs/no-such-page.md") == "docs/no-such-page.md does not exist"
    assert broken(readme, "docs/policy.md#no-such-heading") == "docs/policy.md has no heading #no-such-heading"
    assert broken(readme, "../outside.md") == "../outside.md is outside the repository"
    assert broken(readme, "docs/policy.md#routes") is None


def test_slugs_are_githubs() -> None:
    assert slug("`providers.<name>`") == "providersname"
    assert slug("Secrets: `${VAR}` and `${file:/path}`") == "secrets-var-and-filepath"
    assert slug("CORS (browsers)") == "cors-browsers"
    assert slug("`routes[]`") == "routes"


YAML_BLOCKS: Final = [block for page in GUIDES for block in blocks(page) if block.lang in ("yaml", "yml")]


def environment(text: str) -> dict[str, str]:
    """A value for every `${VAR}` in `text`: a trigger URL for names ending in URL, else a secret-like word."""
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    return {name: URL_VALUE if name.endswith("URL") else "not-a-real-secret" for name in names}


def is_policy(data: object) -> bool:
    return isinstance(data, dict) and ("routes" in data or "providers" in data)


def problems(block: Block) -> list[str]:
    """What `sidecar check` would print for a policy block: every error and warning (none for a good example)."""
    try:
        policy = parse_policy(block.body, block.where, environment(block.body))
    except PolicyError as exc:
        return exc.errors + exc.warnings
    return list(policy.warnings)


def test_the_docs_show_policies() -> None:
    policies = [block for block in YAML_BLOCKS if block.marker != FRAGMENT and is_policy(yaml.safe_load(block.body))]
    assert len(policies) >= 4
    assert all(
        "entra:" in block.body or "introspection:" in block.body for block in policies if "providers" in block.body
    )


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[block.where for block in YAML_BLOCKS])
def test_every_yaml_block_parses_and_every_policy_passes_check(block: Block) -> None:
    data = yaml.safe_load(block.body)
    if block.marker == FRAGMENT or not is_policy(data):
        return
    assert problems(block) == []


def test_a_policy_block_that_check_refuses_is_found() -> None:
    good = next(block for block in YAML_BLOCKS if block.marker != FRAGMENT and is_policy(yaml.safe_load(block.body)))
    assert problems(good) == []
    typo = Block(good.page, good.line, "yaml", good.body.replace("routes:", "rutes:", 1), "")
    assert any("rutes" in problem for problem in problems(typo))


def _rows(page: Path, heading: str) -> list[list[str]]:
    """The cells of every table row in the section under `heading` (up to the next heading of its level or above)."""
    text = unfenced(page.read_text())
    level = heading.split(" ", 1)[0]
    section = text.split(f"\n{heading}\n", 1)[1]
    section = re.split(rf"\n#{{1,{len(level)}}} ", section, maxsplit=1)[0]
    lines = [line for line in section.split("\n") if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_decision_table_has_every_reason_with_its_status() -> None:
    documented = {}
    for cells in _rows(ROOT / "docs" / "decisions.md", "## The decision table")[2:]:
        status, reason = cells[1], cells[2].strip("`")
        assert reason not in documented, f"{reason} has two rows"
        documented[reason] = int(status)
    proxy_reasons = {reason for reason in Reason if reason is not Reason.METRICS_BUSY}  # the admin listener's own
    assert documented == {reason.value: outcome(reason).status for reason in proxy_reasons}


def test_the_metrics_table_has_every_metric_the_sidecar_exports() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    exported = {f"{family.name}_total" if family.type == "counter" else family.name for family in registry.collect()}
    rows = _rows(ROOT / "docs" / "operations.md", "## Metrics")[2:]
    assert {cells[0].strip("`") for cells in rows} == exported
    admin = next(cells for cells in rows if "admin_refusals" in cells[0])
    assert f"`{Reason.METRICS_BUSY.value}`" in admin[3]
