"""The dependencies' internals the sidecar relies on are the ones it was written against: a uvicorn upgrade that
changes them fails here, loudly, naming what to port, before it can change the listener's behaviour silently.

sidecar/edge/protocol.py subclasses uvicorn's HttpToolsProtocol (no public API: uvicorn documents none for protocols).
`GuardedProtocol.data_received` is a copy of uvicorn's with the refusals made ours; the copy calls three private
methods, and the other overrides call `super()` and read the connection's state (`parser`, `cycle`, `pipeline`,
`headers`, `url`, `connections`). Each of those library functions is compared here, as Python reads it (formatting and
comments do not count), with the version recorded below; pyproject.toml bounds uvicorn to the minor release recorded.
limits is used through its documented storage interface only (sidecar/ratelimit/memory_store.py), and
tests/test_ratestore.py checks that our storage answers as limits' own MemoryStorage does.

Run `python -m tests.test_dependency_internals` to print the current digests after porting a change.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import inspect
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

ROOT = Path(__file__).resolve().parent.parent
RECORDED_VERSION = "0.54.0"
UPGRADE = (
    "sidecar/edge/protocol.py (GuardedProtocol) was written against uvicorn {recorded}'s {name}; uvicorn {current}'s "
    "differs. To upgrade: read the change (`pip download --no-deps uvicorn=={current}` and diff "
    "uvicorn/protocols/http/httptools_impl.py with {recorded}'s), port it to GuardedProtocol, run "
    "tests/integration/test_limits.py, test_stalled_clients.py and test_header_rules.py, then record the new digests "
    "(`python -m tests.test_dependency_internals`) and RECORDED_VERSION here, and move uvicorn's bound in "
    "pyproject.toml (then `make lock`)."
)

# uvicorn 0.54.0's HttpToolsProtocol.data_received: GuardedProtocol.data_received is this, with our refusals.
RECORDED_DATA_RECEIVED = """
def data_received(self, data: bytes) -> None:
    self._unset_keepalive_if_required()

    try:
        self.parser.feed_data(data)
    except httptools.HttpParserError:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)
        return
    except httptools.HttpParserUpgrade:
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            self._unsupported_upgrade_warning()
"""

# What GuardedProtocol relies on, and how, with the digest of each function's code in RECORDED_VERSION.
RELIED_ON: dict[str, tuple[str, str]] = {
    "HttpToolsProtocol.__init__": ("ef1b7c9c785b9967", "the state the overrides read"),
    "HttpToolsProtocol.connection_made": ("52a70c678525d887", "overridden"),
    "HttpToolsProtocol.connection_lost": ("8a5a84898dabba92", "overridden"),
    "HttpToolsProtocol.data_received": ("8583b7d501b5b5dd", "copied"),
    "HttpToolsProtocol._unset_keepalive_if_required": ("c8a2b3d2c6549f51", "private, called by the copy"),
    "HttpToolsProtocol._should_upgrade": ("3fde089b4def4efb", "private, called by the copy"),
    "HttpToolsProtocol._unsupported_upgrade_warning": ("2b72baffb4f70927", "private, called by the copy"),
    "HttpToolsProtocol.handle_websocket_upgrade": ("9f6222b9c807ab2d", "called by the copy"),
    "HttpToolsProtocol.on_message_begin": ("4f7bac281585eb31", "overridden"),
    "HttpToolsProtocol.on_headers_complete": ("f5d7f89383b961ff", "overridden"),
    "HttpToolsProtocol.on_response_complete": ("3b835da51ff0d85f", "overridden"),
    "HttpToolsProtocol.shutdown": ("4372fe9ca7a194c2", "overridden"),
    "HttpToolsProtocol.pause_writing": ("5b627149ec45f999", "overridden"),
    "HttpToolsProtocol.resume_writing": ("f5985154ac3e15f8", "overridden"),
    "RequestResponseCycle.__init__": (
        "6f7b16ad25eee559",
        "its more_body, response_complete and keep_alive are read and set",
    ),
    # sidecar/edge/linger.py: the close after a response with keep_alive off is the transport's close(), lingering.
    "RequestResponseCycle.send": ("e4355b337add5d7c", "closes through self.transport.close() (edge/linger.py)"),
    # body_checked: a message_event set with no new body returns an empty http.request, then the flag is read.
    "RequestResponseCycle.receive": ("5c6d69bd5c2ebf73", "woken by message_event (body_checked)"),
}
_CLASSES: dict[str, type] = {"HttpToolsProtocol": HttpToolsProtocol, "RequestResponseCycle": RequestResponseCycle}


def _function(name: str) -> Callable[..., Any]:
    owner, _, attribute = name.partition(".")
    function: Callable[..., Any] = getattr(_CLASSES[owner], attribute)
    return function


def _tree(source: str) -> str:
    """The code as Python reads it, written out again (`ast.unparse`: the same on every Python we support, where
    `ast.dump` is not): formatting and comments do not count, code does."""
    return ast.unparse(ast.parse(textwrap.dedent(source)))


def digest(function: Callable[..., Any]) -> str:
    """The function's syntax tree, hashed: a change of code counts, a change of formatting or comments does not."""
    return hashlib.sha256(_tree(inspect.getsource(function)).encode()).hexdigest()[:16]


def _upgrade(name: str) -> str:
    return UPGRADE.format(recorded=RECORDED_VERSION, current=uvicorn.__version__, name=name)


def test_the_copied_data_received_is_still_uvicorns() -> None:
    current = textwrap.dedent(inspect.getsource(HttpToolsProtocol.data_received))
    if _tree(current) != _tree(RECORDED_DATA_RECEIVED):
        diff = "\n".join(
            difflib.unified_diff(
                RECORDED_DATA_RECEIVED.splitlines(),
                current.splitlines(),
                f"recorded (uvicorn {RECORDED_VERSION})",
                f"installed (uvicorn {uvicorn.__version__})",
                lineterm="",
            )
        )
        pytest.fail(f"{_upgrade('HttpToolsProtocol.data_received')}\n{diff}")


@pytest.mark.parametrize("name", RELIED_ON)
def test_what_the_listener_relies_on_in_uvicorn_is_unchanged(name: str) -> None:
    recorded, how = RELIED_ON[name]
    assert digest(_function(name)) == recorded, f"{name} ({how}): {_upgrade(name)}"


def _locked(name: str) -> Version:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return Version(line.partition("==")[2].split(";")[0].strip())
    raise AssertionError(f"constraints.txt pins no {name}")


def _required(name: str) -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, dependencies) if r.name == name)


@pytest.mark.parametrize("name", ["uvicorn", "limits"])
def test_dependencies_used_beyond_their_documented_api_are_bounded_around_the_locked_version(name: str) -> None:
    requirement = _required(name)
    assert any(spec.operator == "<" for spec in requirement.specifier), f"{name} needs an upper bound in pyproject.toml"
    assert requirement.specifier.contains(_locked(name)), f"the locked {name} is outside pyproject.toml's bound"


def test_uvicorns_bound_admits_only_the_minor_release_recorded_here() -> None:
    """Its internals change between minor releases (0.x): a version the digests were not taken from is refused."""
    recorded = Version(RECORDED_VERSION)
    requirement = _required("uvicorn")
    assert requirement.specifier.contains(recorded)
    assert not requirement.specifier.contains(f"{recorded.major}.{recorded.minor + 1}.0")
    assert not requirement.specifier.contains(f"{recorded.major}.{recorded.minor - 1}.0")
    assert _locked("uvicorn") == Version(uvicorn.__version__) == recorded


if __name__ == "__main__":
    print(f"uvicorn {uvicorn.__version__}")
    for name in RELIED_ON:
        print(f"{name}: {digest(_function(name))}")
