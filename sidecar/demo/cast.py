"""The demo's cast: who can get a token from the demo issuer, and what their tokens say."""

from __future__ import annotations

from sidecar.demo.issuer import CONTOSO_TENANT, FABRIKAM_TENANT, DemoClient

__all__ = ["demo_clients"]


def _oid(letter: str) -> str:
    return f"aaaaaaaa-0000-0000-0000-00000000000{letter}"


def demo_clients() -> list[DemoClient]:
    """The demo's cast: two contoso users, two contoso apps (one holding a role) and a user of another tenant."""
    return [
        DemoClient(
            "lisa",
            "lisa-secret",
            CONTOSO_TENANT,
            {
                "oid": _oid("a"),
                "upn": "lisa@contoso.com",
                "preferred_username": "lisa@contoso.com",
                "idtyp": "user",
                "name": "Lisa",
            },
        ),
        DemoClient("tom", "tom-secret", CONTOSO_TENANT, {"oid": _oid("b"), "upn": "tom@contoso.com", "idtyp": "user"}),
        DemoClient(
            "payroll-app",
            "payroll-app-secret",
            CONTOSO_TENANT,
            {"oid": _oid("c"), "roles": ["Payroll.Invoke"], "idtyp": "app"},
        ),
        DemoClient("reporting-app", "reporting-app-secret", CONTOSO_TENANT, {"oid": _oid("d"), "idtyp": "app"}),
        DemoClient(
            "eve", "eve-secret", FABRIKAM_TENANT, {"oid": _oid("e"), "upn": "eve@fabrikam.com", "idtyp": "user"}
        ),
    ]
