"""Authorization: rules are alternatives, each one's provider, users and claims must all hold; never `email`."""

from __future__ import annotations

import pytest

from sidecar.policy.allow import authorize, evaluate
from sidecar.policy.model import ANYONE, AllowRule, ClaimRequirement, Identity, Match, Route, UserSet

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
