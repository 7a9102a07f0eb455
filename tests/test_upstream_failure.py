"""The one boundary where the upstream client's exceptions become what the gate answers (edge/forward.py, as httpx's
`map_httpcore_exceptions`): 502/504 as UpstreamFailure, never a Rejection; the route's own limits as a Rejection."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil

import pytest

import sidecar.upstream
from sidecar.edge.forward import UPSTREAM_FAILURES, ClientGone, UpstreamBroken, UpstreamFailure, _failure
from sidecar.reasons import Reason, Rejection
from sidecar.upstream.pool import Broken, ConnectFailed, ShareFull, Timeout, UpstreamError

# The client's failure, whether the answer had started, what the client's body upload ended with (None: still
# going, or none) -> the type the gate gets, its reason (if it has one) and the detail for the log line.
ROWS = {
    "connect-refused-is-502": (ConnectFailed("ConnectionRefusedError"), False, None, UpstreamFailure,
                               Reason.UPSTREAM_UNREACHABLE, "ConnectionRefusedError"),
    "a-silence-is-504-with-no-empty-detail": (Timeout(), False, None, UpstreamFailure, Reason.UPSTREAM_TIMEOUT, None),
    "closed-before-the-answer-is-502": (Broken("the upstream closed the connection"), False, None, UpstreamFailure,
                                        Reason.UPSTREAM_UNREACHABLE, "the upstream closed the connection"),
    "any-other-client-error-is-502": (UpstreamError("odd"), False, None, UpstreamFailure,
                                      Reason.UPSTREAM_UNREACHABLE, "odd"),
    "the-routes-pool-share-is-a-limit": (ShareFull(), False, None, Rejection, Reason.POOL_SHARE_FULL, None),
    "after-the-answer-started-the-stream-is-broken": (Broken("x"), True, None, UpstreamBroken, None, None),
    "the-client-gone-first-wins": (Broken("x"), True, ClientGone(), ClientGone, None, None),
    "the-bodys-own-limit-first": (Timeout(), False, Rejection(Reason.BODY_TOO_LARGE), Rejection,
                                  Reason.BODY_TOO_LARGE, None),
}  # fmt: skip


@pytest.mark.parametrize(("error", "answered", "upload", "kind", "reason", "detail"), ROWS.values(), ids=ROWS.keys())
async def test_each_client_failure_becomes_one_answer(
    error: UpstreamError,
    answered: bool,
    upload: Exception | None,
    kind: type[Exception],
    reason: Reason | None,
    detail: str | None,
) -> None:
    uploader: asyncio.Future[None] | None = None
    if upload is not None:
        uploader = asyncio.get_running_loop().create_future()
        uploader.set_exception(upload)
    mapped = _failure(error, answered, uploader)
    assert type(mapped) is kind
    if reason is not None:
        assert isinstance(mapped, UpstreamFailure | Rejection) and mapped.reason is reason
    if isinstance(mapped, UpstreamFailure):
        assert mapped.detail == detail
        assert not isinstance(mapped, Rejection)  # the gate tells a failure from a refusal by its type alone


def test_every_error_of_the_upstream_client_is_mapped_on_purpose() -> None:
    """A new error class of the client gets its row in UPSTREAM_FAILURES (as httpx's test of HTTPCORE_EXC_MAP):
    falling through to the base class would answer 502 for what may be a 504 or a limit."""
    names = [info.name for info in pkgutil.iter_modules(sidecar.upstream.__path__, "sidecar.upstream.")]
    modules = [importlib.import_module(name) for name in names]
    defined = {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, UpstreamError)
    }
    assert defined - {kind for kind, _ in UPSTREAM_FAILURES} == set()
