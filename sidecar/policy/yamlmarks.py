"""Read policy YAML into plain data that remembers the line of every node, and collect located findings.

PyYAML's node API (`compose`) keeps a mark on every node; the usual `safe_load` throws them away and silently keeps
the last of two duplicate keys. Here duplicates are errors, aliases are refused (a policy should say each thing
where it applies), and `${...}` references in string values are expanded per scalar (see `substitute`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import yaml

from sidecar.policy.substitute import expand

__all__ = ["Document", "Path", "format_path", "read_yaml", "syntax_error"]

Path = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+|\([a-z]+\)")  # `(yaml)`, `(file)`: findings not inside the data


def format_path(path: Path) -> str:
    """`("routes", 1, "allow", 0, "users")` -> `routes[1].allow[0].users`; `()` -> `(root)`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "(root)"


@dataclass(frozen=True, slots=True)
class _Finding:
    line: int
    path: str
    message: str


@dataclass(slots=True)
class Document:
    """Parsed data, the line of each path, and the errors and warnings found so far (formatted on demand)."""

    source: str
    data: object = None
    lines: dict[Path, int] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    line_ends: dict[Path, list[str]] = field(default_factory=dict)  # values whose `${...}` has whitespace at an end
    _errors: list[_Finding] = field(default_factory=list)
    _warnings: list[_Finding] = field(default_factory=list)
    _failed: set[Path] = field(default_factory=set)

    def line(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor that exists (a missing key points at its parent)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return 1

    def error(self, path: Path, message: str, *, line: int | None = None) -> None:
        # A value that could not be expanded is already reported; its follow-on schema errors are noise.
        if any(path[:end] in self._failed for end in range(len(path) + 1)):
            return
        self._errors.append(_Finding(line or self.line(path), format_path(path), self._line_end(path, message)))

    def _line_end(self, path: Path, message: str) -> str:
        """A value refused because its `${...}` brought whitespace at an end: say so, not just what the field wants."""
        references = self.line_ends.get(path)
        if not references:
            return message
        return f"{', '.join(references)}: remove it ({message})"

    def check_line_ends(self, exact: Callable[[Path], bool]) -> None:
        """A value whose `${...}` has whitespace at an end that no check refused: an error where the value is
        compared exactly with a token's claim (`exact(path)`: no token could ever match it), else a warning."""
        refused = {finding.path for finding in self._errors}
        for path, references in self.line_ends.items():
            if format_path(path) in refused:
                continue
            if exact(path):
                self.error(path, "the value is compared exactly with the token's claims, so no token would match")
            else:
                self.warn(path, f"{', '.join(references)}, which is kept as part of it")

    def warn(self, path: Path, message: str) -> None:
        self._warnings.append(_Finding(self.line(path), format_path(path), message))

    def fail(self, path: Path, *messages: str) -> None:
        """Report errors at `path` and silence any later error about the same value."""
        for message in messages:
            self.error(path, message)
        self._failed.add(path)

    @property
    def has_errors(self) -> bool:
        return bool(self._errors)

    def errors(self) -> list[str]:
        return self._format(self._errors)

    def warnings(self) -> list[str]:
        return self._format(self._warnings)

    def _format(self, findings: list[_Finding]) -> list[str]:
        ordered = sorted(findings, key=lambda finding: finding.line)  # stable: same line keeps found order
        return [f"{self.source}:{f.line}: {f.path}: {self._scrub(f.message)}" for f in ordered]

    def _scrub(self, message: str) -> str:
        """Belt and braces: messages are written not to echo values, but no expanded value may ever show."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        return message


def read_yaml(text: str, source: str, environ: Mapping[str, str]) -> Document:
    """Parse `text`; on a syntax error `data` stays None and the error carries the line the parser stopped at."""
    doc = Document(source)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        line, message = syntax_error(exc, text)
        doc.error(("(yaml)",), message, line=line)
        return doc
    if root is None:
        doc.error((), "the policy file is empty")
        return doc
    doc.data = _Converter(doc, environ).value(root, ())
    return doc


_INDENTATION = (
    "this line is not indented like the lines above it: the keys of one mapping, and the items of one list, "
    "start in the same column (YAML nests by indentation, with spaces)"
)
# PyYAML's problem -> plain words, and whether the place to show is where the construct began (an unclosed quote or
# bracket is reported at the end of the file, far from the mistake).
_PLAIN: Final = (
    ("expected <block end>", _INDENTATION, False),
    ("did not find expected key", _INDENTATION, False),
    ("did not find expected '-' indicator", "this list item is not indented like the items above it", False),
    (
        "mapping values are not allowed here",
        'a ": " where no key can start: is the line indented too far, or does a value hold ": " (then quote it)?',
        False,
    ),
    (
        "could not find expected ':'",
        'a key without ":" after it, or a value that runs on to this line (indent it further, or quote it)',
        True,
    ),
    ("found character '\\t'", "a tab: YAML indents with spaces only", False),
    ("that cannot start any token", "a character that cannot start a value here: quote the value", False),
    ("expected ',' or ']'", 'a list in [...] that is not closed with "]", or items not separated by ","', True),
    ("expected ',' or '}'", 'a mapping in {...} that is not closed with "}", or entries not separated by ","', True),
    ("found unexpected end of stream", "a quoted value that is never closed: the file ends inside the quotes", True),
    ("but found another document", 'a second document ("---"): a policy file holds one', False),
    ("found unknown escape character", 'an unknown escape in a "double-quoted" value: use single quotes', False),
)
# Shown lines hide what may be a secret: a URL's query (a SAS `sig`), the value of a secret-looking key or of a
# `tls:` key (PEM text may be inline), PEM blocks and long base64 runs (a line of a key, wherever YAML stopped).
_QUERY: Final = re.compile(r"\?[^\s\"']+")
_REFERENCE: Final = re.compile(r"\$\{[^{}\s]*\}")
_SECRET_VALUE: Final = re.compile(
    r"((?:secret|password|token|sig)\w*\s*:\s*|(?:client_key|client_cert|ca_file)\s*:\s*).+", re.IGNORECASE
)
_PEM: Final = re.compile(r"-----BEGIN.*?(?:-----END[^-]*-----|$)")
_BASE64_RUN: Final = re.compile(r"[A-Za-z0-9+/=]{40,}")


def syntax_error(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, str]:
    """The line of a YAML syntax error and a message in plain words, with the line and a caret under the place."""
    problem = exc.problem or exc.context or "invalid YAML"
    plain, at_start = next(((words, start) for found, words, start in _PLAIN if found in problem), (problem, False))
    mark = (exc.context_mark if at_start else None) or exc.problem_mark or exc.context_mark
    if mark is None:
        return 1, plain
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    plain = _unquoted_reference(exc, lines) or plain
    if _inside_pem(lines, mark.line):  # a line of a multi-line PEM block: none of it is shown
        line = line[: len(line) - len(line.lstrip())] + "***"
    shown = _hidden(line).replace("\t", " ")
    column = min(len(_hidden(line[: mark.column])), len(shown))  # where the place is once secrets are hidden
    return mark.line + 1, f"{plain}\n    {shown}\n    {' ' * column}^"


def _unquoted_reference(exc: yaml.MarkedYAMLError, lines: list[str]) -> str | None:
    """In `[...]` or `{...}` YAML reads the `{` of an unquoted `${VAR}` as a mapping: name the fix, not the symptom."""
    if "expected ',' or" not in (exc.problem or ""):
        return None
    marks = [mark.line for mark in (exc.problem_mark, exc.context_mark) if mark is not None and mark.line < len(lines)]
    found = next((m for line in marks if (m := _REFERENCE.search(lines[line]))), None)
    if found is None:
        return None
    return (
        f'an unquoted {found.group(0)} inside [...] or {{...}}: YAML reads its "{{" as the start of a mapping; '
        f'quote it: "{found.group(0)}"'
    )


def _hidden(line: str) -> str:
    line = _BASE64_RUN.sub("***", _PEM.sub("***", line))
    return _SECRET_VALUE.sub(lambda m: m.group(1) + "***", _QUERY.sub("?***", line))


def _inside_pem(lines: list[str], index: int) -> bool:
    """Whether line `index` comes after a line opening a -----BEGIN block and before the line that closes it."""
    for line in reversed(lines[:index]):
        end, begin = line.rfind("-----END"), line.rfind("-----BEGIN")
        if end >= 0 or begin >= 0:
            return begin > end
    return False


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: they would make one node live at several paths (and allow alias bombs)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not supported: write the value where it applies", event.start_mark
            )
        return super().compose_node(parent, index)


class _Converter:
    """Turn nodes into dicts, lists and scalars, recording each path's line on the way down."""

    def __init__(self, doc: Document, environ: Mapping[str, str]) -> None:
        self._doc = doc
        self._environ = environ
        self._scalars = yaml.SafeLoader("")  # its constructor turns a scalar node into int, bool, str, ...

    def value(self, node: yaml.Node, path: Path) -> object:
        self._doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if node.tag not in (_MAP_TAG, _SEQ_TAG):  # `!!set`, `!!omap`, `!custom`: not plain data
            self._doc.fail(path, f"unsupported YAML tag {node.tag}")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        return [self.value(item, (*path, index)) for index, item in enumerate(node.value)]

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, object]:
        result: dict[str, object] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in first_line:
                self._doc.error((*path, key), f'duplicate key "{key}" (first at line {first_line[key]})', line=line)
                continue
            first_line[key] = line
            self._doc.lines[(*path, key)] = line  # the key's line: a value may start on the next one
            result[key] = self.value(value_node, (*path, key))
        return result

    def _key(self, node: yaml.Node, path: Path) -> str | None:
        """Keys are plain strings, never expanded: `${...}` may change values, not the shape of the policy."""
        key = self._construct(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(key, str):
            return key
        self._doc.error(path, "mapping keys must be strings (quote it)", line=node.start_mark.line + 1)
        return None

    def _scalar(self, node: yaml.Node, path: Path) -> object:
        value = self._construct(node)
        if isinstance(value, _Unreadable):
            self._doc.fail(path, value.problem)
            return None
        if node.tag != _STR_TAG or not isinstance(value, str):
            return value
        expansion = expand(value, self._environ)
        self._doc.secrets.update(expansion.secrets)
        if expansion.line_ends:
            self._doc.line_ends[path] = expansion.line_ends
        if expansion.errors:
            self._doc.fail(path, *expansion.errors)
        return expansion.value

    def _construct(self, node: yaml.Node) -> object:
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:  # an unknown tag such as `!python/object`
            return _Unreadable(str(getattr(exc, "problem", None) or exc))


@dataclass(frozen=True, slots=True)
class _Unreadable:
    problem: str
