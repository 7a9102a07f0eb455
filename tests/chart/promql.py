"""The chart's PromQL, parsed (promql-parser): alert rules, dashboard queries, and the series they read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import promql_parser

from tests.chart.render import Rendered

__all__ = ["Query", "alert_queries", "dashboard_queries", "exported_series"]

# Grafana's variables, as Grafana would substitute them before the query reaches Prometheus.
_GRAFANA: Final = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$namespace": "flows",
    "$job": "payments-auth-sidecar-metrics",
    "$route": ".*",
}
_LABEL_VALUES: Final = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


@dataclass(frozen=True)
class Query:
    """One expression and where it comes from (an alert name or a dashboard panel title)."""

    origin: str
    text: str

    @property
    def expr(self) -> promql_parser.Expr:
        return promql_parser.parse(self.text)

    def selectors(self) -> list[promql_parser.VectorSelector]:
        found: list[promql_parser.VectorSelector] = []

        def visit(node: promql_parser.Expr) -> bool:
            if isinstance(node, promql_parser.VectorSelector):
                found.append(node)
            return True

        promql_parser.walk(self.expr, visit)
        return found

    def metrics(self) -> set[str]:
        return {selector.name for selector in self.selectors() if selector.name}

    def aggregations(self) -> list[tuple[str, set[str]]]:
        """(operator, grouping labels) of every `sum by (...)`-style aggregation."""
        found: list[tuple[str, set[str]]] = []

        def visit(node: promql_parser.Expr) -> bool:
            if isinstance(node, promql_parser.AggregateExpr):
                found.append((str(node.op), set(node.modifier.labels) if node.modifier else set()))
            return True

        promql_parser.walk(self.expr, visit)
        return found

    def comparisons(self, metric: str) -> list[tuple[str, float]]:
        """(operator, number) of every `metric{...} OP number` filter, e.g. [("==", 1.0)]."""
        found: list[tuple[str, float]] = []

        def visit(node: promql_parser.Expr) -> bool:
            if (
                isinstance(node, promql_parser.BinaryExpr)
                and isinstance(node.lhs, promql_parser.VectorSelector)
                and node.lhs.name == metric
                and isinstance(node.rhs, promql_parser.NumberLiteral)
            ):
                found.append((str(node.op), node.rhs.val))
            return True

        promql_parser.walk(self.expr, visit)
        return found

    def functions(self) -> set[str]:
        found: set[str] = set()

        def visit(node: promql_parser.Expr) -> bool:
            if isinstance(node, promql_parser.Call):
                found.add(node.func.name)
            return True

        promql_parser.walk(self.expr, visit)
        return found


def alert_queries(rendered: Rendered) -> list[Query]:
    rules = rendered.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    return [Query(rule["alert"], rule["expr"]) for rule in rules]


def _grafana(text: str) -> str:
    for variable, value in sorted(_GRAFANA.items(), key=lambda item: -len(item[0])):
        text = text.replace("${" + variable[1:] + "}", value).replace(variable, value)
    return text


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every panel target, and the series behind each `label_values(...)` template variable."""
    queries = [
        Query(panel["title"], _grafana(target["expr"]))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable["query"]["query"])
            assert match and match.group(1), f"${variable['name']}: not label_values(series, label)"
            queries.append(Query(f"${variable['name']}", _grafana(match.group(1))))
    return queries


def exported_series(exposition: str) -> set[str]:
    """The series names a scrape can hold, from the `# TYPE` lines (present before any sample is recorded)."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count", "_created"), "summary": ("", "_sum", "_count", "_created")}
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
    return names
