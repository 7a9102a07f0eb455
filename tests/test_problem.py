"""Problem bodies: every refusal's JSON is exactly what encoding its fields whole would write (the body is built
from cached pieces around the request id)."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest

from sidecar.edge.problem import PROBLEM_TYPE_BASE, problem_body
from sidecar.reasons import Reason, outcome

ROUTES = {"no-route": None, "plain": "user-lookup", "awkward": 'a"b\\c\u00e9'}
REQUEST_IDS = {"hex": "0123456789abcdef01234567", "awkward": 'x"y\\z\n'}


def _whole(reason: Reason, request_id: str, route: str | None, status: int | None) -> bytes:
    result = outcome(reason)
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + reason.value,
        "title": HTTPStatus(status).phrase if status else result.title,
        "status": status or result.status,
        "detail": result.description,
        "reason": reason.value,
        "request_id": request_id,
    }
    if route is not None:
        body["route"] = route
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


@pytest.mark.parametrize("reason", list(Reason), ids=[reason.value for reason in Reason])
@pytest.mark.parametrize("route", list(ROUTES.values()), ids=list(ROUTES))
@pytest.mark.parametrize("request_id", list(REQUEST_IDS.values()), ids=list(REQUEST_IDS))
@pytest.mark.parametrize("status", [None, 403], ids=["table-status", "forward-auth-403"])
def test_the_body_is_the_fields_encoded_whole(
    reason: Reason, route: str | None, request_id: str, status: int | None
) -> None:
    body = problem_body(reason, request_id, route, status)
    assert body == _whole(reason, request_id, route, status)
    assert json.loads(body)["request_id"] == request_id
