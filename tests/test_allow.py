"""Authorization: rules are alternatives, each one's provider, users and claims must all hold; never `email`."""

from __future__ import annotations

import pytest

from sidecar.policy.allow import authorize, evaluate
from sidecar.policy.model import ANYONE, AllowRule, CallerKind, ClaimRequirement, Identity, Match, Route, UserSet

LISA_OID = "7d3c1b2a-9e8f-4a6b-8c1d-2e3f4a5b6c7d"


def rule(
    provider: str = "contoso",
    *,
    ids: tuple[str, ...] = (),
    names: tuple[str, ...] = (),
    claims: dict[str, tuple[str, ...]] | None = None,
    index: int = 0,
) -> AllowRule:
    users = UserSet(frozenset(ids), frozenset(names)) if ids or names else None
    requirements = tuple(ClaimRequirement(name, frozenset(values)) for name, values in (claims or {}).items())
    return AllowRule(provider, users, requirements, index)


def route(*rules: AllowRule) -> Route:
    return Route("r", Match(path="/r"), "https://up.example.com/", tuple(rules))


def who(provider: str = "contoso", **claims: object) -> Identity:
    return Identity(provider, claims, expires_at=2_000_000_000.0)


BY_OID = rule(ids=(LISA_OID,))
BY_NAME = rule(names=("lisa@contoso.com",))
ROLES = rule(claims={"roles": ("Payroll.Invoke",)})
SCOPES = rule(claims={"scp": ("Payroll.Run",)})
BOTH_CLAIMS = rule(claims={"roles": ("Payroll.Invoke",), "tid": ("tenant-1",)})
ANY_USER = rule()

CASES = {
    "any-user-of-provider": (ANY_USER, who(sub="x"), True),
    "wrong-provider": (ANY_USER, who("fabrikam", sub="x"), False),
    "oid-listed": (BY_OID, who(oid=LISA_OID, sub="pairwise"), True),
    "sub-listed": (rule(ids=("sub-123",)), who(oid="other", sub="sub-123"), True),
    "oid-is-exact": (BY_OID, who(oid=LISA_OID.upper()), False),
    "oid-not-listed": (BY_OID, who(oid="someone-else"), False),
    "oid-listed-wrong-provider": (BY_OID, who("fabrikam", oid=LISA_OID), False),
    "upn-listed": (BY_NAME, who(upn="lisa@contoso.com"), True),
    "upn-case-insensitive": (BY_NAME, who(upn="Lisa@Contoso.COM"), True),
    "preferred-username-listed": (BY_NAME, who(preferred_username="LISA@contoso.com"), True),
    "email-never-matches-users": (BY_NAME, who(email="lisa@contoso.com"), False),
    "email-claim-never-matches": (rule(claims={"email": ("lisa@contoso.com",)}), who(email="lisa@contoso.com"), False),
    "name-as-oid-exact": (BY_NAME, who(oid="lisa@contoso.com"), True),
    "empty-identity": (BY_OID, who(), False),
    "non-string-oid": (BY_OID, who(oid=[LISA_OID]), False),
    "roles-list-contains": (ROLES, who(roles=["Reader", "Payroll.Invoke"]), True),
    "roles-list-lacks": (ROLES, who(roles=["Reader"]), False),
    "roles-string-equal": (ROLES, who(roles="Payroll.Invoke"), True),
    "roles-string-not-split": (ROLES, who(roles="Reader Payroll.Invoke"), False),
    "roles-missing": (ROLES, who(), False),
    "roles-non-string-items": (ROLES, who(roles=[1, None, {"x": 1}]), False),
    "scp-word": (SCOPES, who(scp="User.Read Payroll.Run"), True),
    "scp-single": (SCOPES, who(scp="Payroll.Run"), True),
    "scp-substring-is-not-word": (SCOPES, who(scp="Payroll.Runner"), False),
    "scp-split-on-spaces-only-not-tabs": (SCOPES, who(scp="User.Read\tPayroll.Run"), False),
    "scope-claim-words": (rule(claims={"scope": ("payroll:run",)}), who(scope="openid payroll:run"), True),
    "claims-and-all-hold": (BOTH_CLAIMS, who(roles=["Payroll.Invoke"], tid="tenant-1"), True),
    "claims-and-one-fails": (BOTH_CLAIMS, who(roles=["Payroll.Invoke"], tid="tenant-2"), False),
    "users-and-claims-both-needed": (rule(ids=(LISA_OID,), claims={"roles": ("A",)}), who(oid=LISA_OID), False),
    "bool-claim-is-not-string": (rule(claims={"admin": ("true",)}), who(admin=True), False),
}


@pytest.mark.parametrize(("allow", "identity", "held"), CASES.values(), ids=CASES.keys())
def test_one_rule(allow: AllowRule, identity: Identity, held: bool) -> None:
    assert authorize(route(allow), identity) == (allow if held else None)
    ((evaluated, result, _),) = evaluate(route(allow), identity)
    assert (evaluated, result) == (allow, held)


def test_alternatives_first_that_holds_wins() -> None:
    by_oid, by_role = rule(ids=(LISA_OID,), index=0), rule(claims={"roles": ("Payroll.Invoke",)}, index=1)
    payroll = route(by_oid, by_role)
    assert authorize(payroll, who(oid=LISA_OID, roles=["Payroll.Invoke"])) is by_oid
    assert authorize(payroll, who(oid="bob", roles=["Payroll.Invoke"])) is by_role
    assert authorize(payroll, who(oid="bob")) is None


def test_alternatives_across_providers() -> None:
    rules = route(rule("contoso", ids=("a",)), rule("fabrikam", index=1))
    assert authorize(rules, who("fabrikam", sub="whoever")) == rule("fabrikam", index=1)
    assert authorize(rules, who("other", sub="a")) is None


def test_anyone_route_is_never_authorized_here() -> None:
    open_route = Route("open", Match(path="/o"), "https://up.example.com/", ANYONE)
    assert authorize(open_route, who(sub="x")) is None
    assert evaluate(open_route, who(sub="x")) == []


def test_evaluate_explains_each_rule() -> None:
    rules = (
        rule(names=("lisa@contoso.com",)),
        rule(claims={"roles": ("Payroll.Invoke", "Admin")}, index=1),
        rule("fabrikam", index=2),
        rule(index=3),
        rule(ids=("someone",), claims={"scp": ("Payroll.Run",)}, index=4),
    )
    identity = who(upn="Lisa@Contoso.com", oid="oid-1", roles=["Reader"], scp="Payroll.Run", email="x@y")
    assert [(held, reason) for _, held, reason in evaluate(route(*rules), identity)] == [
        (True, "provider contoso matched; user Lisa@Contoso.com listed"),
        (False, "provider contoso matched; claim roles: none of [Admin, Payroll.Invoke] present"),
        (False, "provider fabrikam required; the token is from contoso"),
        (True, "provider contoso matched; any user"),
        (
            False,
            "provider contoso matched; user not listed (oid, sub, upn, preferred_username); "
            "claim scp: Payroll.Run present",
        ),
    ]


def test_evaluate_never_shows_unmatched_token_contents() -> None:
    identity = who(oid="secret-oid", upn="secret@contoso.com", roles=["SecretRole"], email="secret@mail")
    reasons = " ".join(reason for _, _, reason in evaluate(route(BY_OID, ROLES), identity))
    assert "secret" not in reasons.lower()


# --- app callers: apps, groups, scopes, user or app tokens only --------------------------------------------------

APPS = AllowRule("contoso", apps=frozenset({"client-1"}))
GROUPS = AllowRule("contoso", groups=frozenset({"g-payroll"}))
SCOPED = AllowRule("contoso", scopes=frozenset({"Payroll.Run"}))
APP_ONLY = AllowRule("contoso", caller=CallerKind.APP)
USER_ONLY = AllowRule("contoso", caller=CallerKind.USER)
# Entra tokens as they come: a client-credentials token (v2: azp, no scp), a delegated one (v1: appid, scp).
APP_TOKEN = {"azp": "client-1", "oid": "sp-oid", "roles": ["Payroll.Invoke"]}
USER_TOKEN = {"appid": "client-1", "oid": LISA_OID, "scp": "User.Read Payroll.Run", "upn": "lisa@contoso.com"}

APP_CASES = {
    "apps-azp-v2": (APPS, who(**APP_TOKEN), True),
    "apps-appid-v1": (APPS, who(appid="client-1"), True),
    "apps-client-id-rfc9068": (APPS, who(client_id="client-1"), True),
    "apps-other-client": (APPS, who(azp="client-2"), False),
    "apps-exact-case": (APPS, who(azp="CLIENT-1"), False),
    "apps-not-a-string": (APPS, who(azp=["client-1"]), False),
    "apps-absent": (APPS, who(oid="x"), False),
    "groups-contains": (GROUPS, who(groups=["g-other", "g-payroll"]), True),
    "groups-lacks": (GROUPS, who(groups=["g-other"]), False),
    "groups-overage-fails-closed": (GROUPS, who(_claim_names={"groups": "src1"}), False),
    "scopes-scp-word": (SCOPED, who(scp="User.Read Payroll.Run"), True),
    "scopes-scope-claim": (SCOPED, who(scope="openid Payroll.Run"), True),
    "scopes-list-okta": (SCOPED, who(scp=["openid", "Payroll.Run"]), True),
    "scopes-substring": (SCOPED, who(scp="Payroll.RunAll"), False),
    "scopes-split-on-spaces-only-not-tabs": (SCOPED, who(scp="User.Read\tPayroll.Run"), False),
    "groups-lone-string-is-a-list-of-one": (GROUPS, who(groups="g-payroll"), True),
    "scopes-app-token-has-none": (SCOPED, who(**APP_TOKEN), False),
    "app-only-client-credentials": (APP_ONLY, who(**APP_TOKEN), True),
    "app-only-delegated-refused": (APP_ONLY, who(**USER_TOKEN), False),
    "app-only-idtyp-app": (APP_ONLY, who(idtyp="app", scp="x"), True),
    "app-only-idtyp-user": (APP_ONLY, who(idtyp="user"), False),
    "user-only-delegated": (USER_ONLY, who(**USER_TOKEN), True),
    "user-only-client-credentials-refused": (USER_ONLY, who(**APP_TOKEN), False),
    "user-only-idtyp-user": (USER_ONLY, who(idtyp="user"), True),
    "user-only-odd-idtyp-falls-back-to-scp": (USER_ONLY, who(idtyp="device", scp="x"), True),
    "apps-and-app-only": (
        AllowRule("contoso", apps=frozenset({"client-1"}), caller=CallerKind.APP),
        who(**APP_TOKEN),
        True,
    ),
    "user-via-client-app": (
        AllowRule("contoso", UserSet(frozenset({LISA_OID}), frozenset()), apps=frozenset({"client-1"})),
        who(**USER_TOKEN),
        True,
    ),
    "user-via-other-client-app": (
        AllowRule("contoso", UserSet(frozenset({LISA_OID}), frozenset()), apps=frozenset({"client-2"})),
        who(**USER_TOKEN),
        False,
    ),
}


@pytest.mark.parametrize(("allow", "identity", "held"), APP_CASES.values(), ids=APP_CASES.keys())
def test_app_caller_rule(allow: AllowRule, identity: Identity, held: bool) -> None:
    assert authorize(route(allow), identity) == (allow if held else None)
    ((_, result, _),) = evaluate(route(allow), identity)
    assert result is held


def test_evaluate_explains_app_caller_rules() -> None:
    rules = (
        AllowRule("contoso", apps=frozenset({"client-1"}), caller=CallerKind.APP),
        AllowRule("contoso", groups=frozenset({"g-1"}), index=1),
        AllowRule("contoso", scopes=frozenset({"Payroll.Run"}), caller=CallerKind.USER, index=2),
    )
    identity = who(azp="client-1", _claim_names={"groups": "src1"})
    assert [(held, reason) for _, held, reason in evaluate(route(*rules), identity)] == [
        (True, "provider contoso matched; app tokens only: this is an app token; app client-1 listed"),
        (
            False,
            "provider contoso matched; groups: none of [g-1] present (group overage: the token lists too many "
            "groups to carry them; use app roles)",
        ),
        (
            False,
            "provider contoso matched; user tokens only: this is an app token; scopes: none of [Payroll.Run] present",
        ),
    ]


def test_evaluate_says_which_kind_of_token_and_that_no_app_was_listed() -> None:
    rules = (
        AllowRule("contoso", caller=CallerKind.APP),
        AllowRule("contoso", apps=frozenset({"client-1"}), index=1),
    )
    identity = who(idtyp="user", azp="client-2")
    assert [(held, reason) for _, held, reason in evaluate(route(*rules), identity)] == [
        (False, "provider contoso matched; app tokens only: this is a user token"),
        (False, "provider contoso matched; app not listed (azp, appid, client_id)"),
    ]


def test_evaluate_quotes_values_whose_spaces_or_control_characters_would_not_show() -> None:
    """`sidecar explain`: a configured or matched value with a space at an end, a control character, or nothing at
    all is shown quoted (JSON), so the operator sees why `Admin` did not match ` Admin`."""
    odd = rule(claims={"roles": (" Admin", "a\tb", "")})
    refused = evaluate(route(odd), who(roles=["Admin"]))
    matched = evaluate(route(odd), who(roles=[" Admin"]))
    assert [(held, reason) for _, held, reason in refused + matched] == [
        (False, 'provider contoso matched; claim roles: none of ["", " Admin", "a\\tb"] present'),
        (True, 'provider contoso matched; claim roles: " Admin" present'),
    ]
