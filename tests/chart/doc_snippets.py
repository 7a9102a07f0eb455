"""The YAML examples of docs/kubernetes.md, by the `<!-- snippet: NAME -->` marker above each: tests run them as is."""

from __future__ import annotations

import re
import textwrap
from typing import Any, Final

import yaml

from tests.chart.render import CHART

__all__ = ["KUBERNETES_DOC", "snippet"]

KUBERNETES_DOC: Final = CHART.parents[1] / "docs" / "kubernetes.md"


def snippet(name: str) -> Any:
    """The YAML block right after `<!-- snippet: NAME -->` (indented or not), parsed."""
    pattern = rf"<!-- snippet: {re.escape(name)} -->\n *```yaml\n(.*?)\n *```"
    found = re.search(pattern, KUBERNETES_DOC.read_text(), flags=re.DOTALL)
    assert found, f"docs/kubernetes.md has no snippet {name!r}"
    return yaml.safe_load(textwrap.dedent(found.group(1)))
