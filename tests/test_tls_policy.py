"""`tls:` of routes and providers in the policy: its shape (FILE:LINE errors), `check` reading and pairing the files
as serving will, secrets never echoed, a reload whose files do not load keeping the current policy; and the
listener's --tls-* options resolved from flags and SIDECAR_TLS_* variables."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme
from prometheus_client import CollectorRegistry

from sidecar.auth.introspect import Introspector
from sidecar.cli.commands import check_command
from sidecar.edge.runtime import Runtime, policy_hash
from sidecar.edge.upstream_tls import ControlClients
from sidecar.observe.metrics import Metrics
from sidecar.ops.reload import PolicyReloader
from sidecar.options import ListenerTlsFiles, ServeOptions
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Introspection, Provider, UpstreamTls
from sidecar.upstream.tls import client_context
from tests.support.jwtkit import FakeClock, FakeIntrospection
from tests.test_policy_load import errors, parse, route

# route() puts the route at line 7 and `body` from line 11 (the route's `tls:` key).
WITH_TLS = "    tls:\n{}"


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    ca, other = trustme.CA(), trustme.CA()
    leaf, stranger = ca.issue_cert("sidecar.test"), other.issue_cert("sidecar.test")
    written = {
        "ca": ca.cert_pem.bytes(),
        "cert": leaf.cert_chain_pems[0].bytes(),
        "key": leaf.private_key_pem.bytes(),
        "other_key": stranger.private_key_pem.bytes(),
    }
    for name, data in written.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    return {name: str(tmp_path / f"{name}.pem") for name in written}


def _tls(**values: str) -> str:
    return WITH_TLS.format("".join(f"      {key}: {value}\n" for key, value in values.items()))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_tls(client_cert="/etc/tls/cert.pem"), "p.yaml:11: routes[0].tls: client_cert and client_key go together"),
        ("    tls: {}\n", "p.yaml:11: routes[0].tls: needs ca_file, or client_cert with client_key"),
        (_tls(ca_file="ca.pem"), "p.yaml:12: routes[0].tls.ca_file: must be an absolute path to a PEM file, or PEM"),
        (_tls(ca_file="/ca.pem", verify="false"), 'p.yaml:13: routes[0].tls.verify: unknown key "verify"'),
    ],
    ids=["cert-without-key", "empty", "relative-path", "no-switch-for-verification"],
)
def test_the_shape_of_tls_is_checked_with_its_line(body: str, message: str) -> None:
    (found,) = errors(route(body))
    assert found.startswith(message), found


def test_tls_on_a_plain_http_upstream_is_an_error(files: dict[str, str]) -> None:
    text = route(_tls(ca_file=files["ca"])).replace("https://up.example.com/a", "http://up.example.com/a")
    assert errors(text) == ["p.yaml:11: routes[0].tls: applies to an https:// upstream only (this one is plain http)"]


def test_values_are_paths_or_pem_text_from_file_references(files: dict[str, str]) -> None:
    text = route(_tls(ca_file=files["ca"], client_cert=files["cert"], client_key="${file:" + files["key"] + "}"))
    (loaded,) = parse(text).routes
    key = Path(files["key"]).read_text().rstrip("\n")
    assert loaded.tls == UpstreamTls(files["ca"], files["cert"], key)
    assert key not in repr(loaded.tls)  # the key itself is never in a repr (nor a log line made from one)


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    code = check_command(str(policy))
    out, err = capsys.readouterr()
    return code, (out + err).replace(str(policy), "p.yaml")


def test_check_accepts_usable_files(tmp_path: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    text = route(_tls(ca_file=files["ca"], client_cert=files["cert"], client_key=files["key"]))
    assert _check(tmp_path, text, capsys)[0] == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file: cannot read /nonexistent/ca.pem: No such file or directory"),
        ({"ca_file": "KEY"}, "ca_file: no usable certificate in it"),
        (
            {"client_cert": "CERT", "client_key": "OTHER_KEY"},
            "client_key is not client_cert's key (KEY_VALUES_MISMATCH)",
        ),
    ],
    ids=["missing", "not-a-certificate", "key-mismatch"],
)
def test_check_reads_and_pairs_the_files_as_serving_will(
    tmp_path: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str], values: dict[str, str], message: str
) -> None:
    named = {"KEY": files["key"], "CERT": files["cert"], "OTHER_KEY": "${file:" + files["other_key"] + "}"}
    text = route(_tls(**{key: named.get(value, value) for key, value in values.items()}))
    code, output = _check(tmp_path, text, capsys)
    assert code == 1
    assert f"p.yaml:11: routes[0].tls: {message}" in output.splitlines()
    assert "PRIVATE KEY" not in output


def test_a_provider_s_tls_is_checked_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = route().replace("    audiences:", "    tls: { ca_file: /nonexistent/ca.pem }\n    audiences:", 1)
    code, output = _check(tmp_path, text, capsys)
    assert code == 1
    assert (
        "p.yaml:5: providers.contoso.tls: ca_file: cannot read /nonexistent/ca.pem: No such file or directory" in output
    )


@pytest.fixture()
async def runtime() -> AsyncIterator[Runtime]:
    text = route()
    runtime = Runtime.create(
        parse_policy(text, "policy.yaml", {}), policy_hash(text.encode()), Metrics(CollectorRegistry())
    )
    yield runtime
    await runtime.close()


async def test_a_reload_whose_tls_files_do_not_load_keeps_the_current_policy(
    tmp_path: Path, runtime: Runtime, files: dict[str, str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(route())
    reloader = PolicyReloader(runtime, str(path), {}, 1.0, 1.0, FakeClock(0.0))
    before = runtime.current.hash
    path.write_text(route(_tls(ca_file="/nonexistent/ca.pem")))
    assert not await reloader.reload("sighup")
    assert runtime.current.hash == before
    registry = runtime.metrics.registry
    assert registry.get_sample_value("sidecar_config_reloads_total", {"result": "error"}) == 1
    path.write_text(route(_tls(ca_file=files["ca"])))
    assert await reloader.reload("sighup")
    assert list(runtime.current.upstream_tls) == ["a"]


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ({}, {}, None),
        ({"tls_cert": "/c", "tls_key": "/k"}, {}, ListenerTlsFiles("/c", "/k")),
        (
            {},
            {"SIDECAR_TLS_CERT": "/c", "SIDECAR_TLS_KEY": "/k", "SIDECAR_TLS_CLIENT_CA": "/ca"},
            ListenerTlsFiles("/c", "/k", "/ca"),
        ),
        ({"tls_cert": "/flag"}, {"SIDECAR_TLS_CERT": "/env", "SIDECAR_TLS_KEY": "/k"}, ListenerTlsFiles("/flag", "/k")),
    ],
    ids=["none", "flags", "environment", "flag-wins"],
)
def test_listener_tls_options(
    flags: dict[str, str], environ: dict[str, str], expected: ListenerTlsFiles | None
) -> None:
    assert ServeOptions.resolve({"config": "p.yaml", **flags}, environ).tls == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"tls_cert": "/c"}, "--tls-cert needs --tls-key (env SIDECAR_TLS_KEY)"),
        ({"tls_key": "/k"}, "--tls-key needs --tls-cert (env SIDECAR_TLS_CERT)"),
        ({"tls_client_ca": "/ca"}, "--tls-client-ca needs --tls-cert and --tls-key"),
    ],
    ids=["cert-alone", "key-alone", "client-ca-alone"],
)
def test_listener_tls_options_come_in_pairs(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        ServeOptions.resolve({"config": "p.yaml", **flags}, {})
    assert str(refused.value).startswith(message)


async def test_a_provider_with_tls_is_asked_through_its_own_client_and_a_rotation_makes_a_new_one(
    files: dict[str, str],
) -> None:
    """The control plane: introspection (and key fetches, through the same chooser) of a provider with `tls:` go
    through a client built from it, never the default one; new content under the same settings is a new client."""
    tls = UpstreamTls(ca_file=files["ca"], where="p.yaml:5: providers.opaque.tls")
    endpoint = Introspection("https://idp.test/oauth2/introspect", "sidecar", "s3cret")
    provider = Provider("opaque", "", frozenset({"api://app"}), None, introspection=endpoint, tls=tls)
    clients = ControlClients(httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(500))))
    try:
        clients.use({tls: client_context(tls)})
        own = clients.for_provider(provider)
        assert own is not clients.default
        assert clients.for_provider(dataclasses.replace(provider, tls=None)) is clients.default
        clients.use({tls: client_context(tls)})
        assert clients.for_provider(provider) is own  # same content: same client (its connections)
        Path(files["ca"]).write_bytes(trustme.CA().cert_pem.bytes())  # the CA bundle rotated on disk
        clients.use({tls: client_context(tls)})
        assert clients.for_provider(provider) is not own
    finally:
        await clients.close()
    server = FakeIntrospection(endpoint.endpoint)
    server.answers["opaque-token"] = {"active": True, "sub": "user-1", "aud": "api://app", "exp": 2e9}
    async with server.client() as through_tls, httpx.AsyncClient() as default:
        introspector = Introspector(default, client_for=lambda p: through_tls if p.tls is not None else default)
        identity = await introspector.introspect(provider, "opaque-token")
    assert identity.subject == "user-1" and len(server.calls) == 1


def _key_in_yaml_with_a_syntax_error(key_pem: str, style: str) -> str:
    """A route whose `client_key:` holds the PEM text itself, with a YAML syntax error inside the key."""
    lines = key_pem.strip().splitlines()
    if style == "inline":  # one double-quoted line; `\q` is an unknown escape
        quoted = "\\n".join([*lines[:2], "\\q", *lines[2:]])
        return route(_tls(client_cert="/etc/tls/cert.pem", client_key=f'"{quoted}"'))
    # block style: one line of the key's base64 dedented below the block, so the error is reported on it
    block = [f"        {line}" for line in lines]
    block[2] = f"      : {lines[2]}"
    return route(_tls(client_cert="/etc/tls/cert.pem", client_key="|\n" + "\n".join(block)))


@pytest.mark.parametrize("style", ["inline", "block"])
async def test_a_syntax_error_inside_an_inline_key_never_shows_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, runtime: Runtime, style: str
) -> None:
    key_pem = trustme.CA().issue_cert("sidecar.test").private_key_pem.bytes().decode()
    text = _key_in_yaml_with_a_syntax_error(key_pem, style)
    code, output = _check(tmp_path, text, capsys)  # `serve` at start reports the same message
    assert code == 1 and "(yaml)" in output
    path = tmp_path / "policy.yaml"
    reloader = PolicyReloader(runtime, str(path), {}, 1.0, 1.0, FakeClock(0.0))
    assert not await reloader.reload("sighup")  # its error is logged
    logged = str([record.__dict__ for record in caplog.records])  # the message and its fields
    assert "(yaml)" in logged
    shown = output + capsys.readouterr().out + logged
    body = "".join(key_pem.strip().splitlines()[1:-1])
    pieces = [body[i : i + 12] for i in range(0, len(body) - 12)]
    assert [piece for piece in pieces if piece in shown] == []
    assert "PRIVATE KEY" not in shown
