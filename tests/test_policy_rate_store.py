"""`rate_limit_store`: the Redis URL forms limits' storage takes, the timeout, on_error and key prefix, one located
error per mistake, a warning for a password sent in clear, and the secrets never echoed nor in repr."""

from __future__ import annotations

import pytest

from sidecar.policy.load import PolicyError, parse_policy
from sidecar.policy.model import RateLimitStore, StoreFailure

# The store is on line 7.
POLICY = """\
version: 1
routes:
  - name: a
    match: {path: /a}
    upstream: http://127.0.0.1:9/
    allow: anyone
rate_limit_store: """


def store(text: str, environ: dict[str, str] | None = None) -> tuple[RateLimitStore | None, tuple[str, ...]]:
    policy = parse_policy(POLICY + text, "p.yaml", environ or {})
    return policy.rate_limit_store, policy.warnings


def errors(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(POLICY + text, "p.yaml", environ or {})
    return caught.value.errors


def test_without_the_key_limits_are_counted_in_each_process() -> None:
    policy = parse_policy(POLICY.rpartition("\n")[0] + "\n", "p.yaml", {})
    assert policy.rate_limit_store is None


def test_defaults() -> None:
    assert store("{url: redis://redis.internal:6379/0}")[0] == RateLimitStore(
        "redis://redis.internal:6379/0", 0.05, StoreFailure.ALLOW, None, "auth-sidecar"
    )


VALID = {
    "one-server": "redis://redis:6379",
    "a-database": "redis://redis:6379/2",
    "tls": "rediss://redis.example.com:6380/0",
    "password-in-the-url": "rediss://:s3cret@redis:6380",
    "acl-user": "rediss://sidecar:s3cret@redis:6380/0",
    "sentinels": "redis+sentinel://sentinel-0:26379,sentinel-1:26379/mymaster",
}


@pytest.mark.parametrize("url", VALID.values(), ids=VALID.keys())
def test_the_url_forms_limits_takes(url: str) -> None:
    found, _ = store(f"{{url: '{url}'}}")
    assert found is not None and found.url == url


def test_every_setting_and_the_password_from_a_file(tmp_path: object) -> None:
    text = "{url: '${REDIS_URL}', password: '${SECRET}', timeout: 20ms, on_error: deny, prefix: 'payments:'}"
    found, _ = store(text, {"REDIS_URL": "rediss://redis:6380/0", "SECRET": "from-a-file"})
    assert found == RateLimitStore("rediss://redis:6380/0", 0.02, StoreFailure.DENY, "from-a-file", "payments:")
    assert "from-a-file" not in repr(found) and "redis:6380" not in repr(found)


ERRORS = {
    "http": ("{url: 'http://redis:6379'}", "url: must be a redis://, rediss:// (TLS) or redis+sentinel:// URL"),
    "no-host": ("{url: 'redis://'}", "url: must name each host with its port (redis://host:6379/0)"),
    "no-port": ("{url: 'redis://redis/0'}", "url: must name each host with its port (redis://host:6379/0)"),
    "a-sentinel-without-port": (
        "{url: 'redis+sentinel://s1:26379,s2/mymaster'}",
        "url: must name each host with its port (redis://host:6379/0)",
    ),
    "bad-port": ("{url: 'redis://redis:99999'}", "url: has an invalid port"),
    "two-hosts": (
        "{url: 'redis://a:6379,b:6379'}",
        "url: names one host and, as its path, an optional database number (redis://host:6379/0)",
    ),
    "a-path": (
        "{url: 'redis://redis:6379/cache'}",
        "url: names one host and, as its path, an optional database number (redis://host:6379/0)",
    ),
    "sentinel-without-service": (
        "{url: 'redis+sentinel://s:26379'}",
        "url: must name the Sentinel service as its path (redis+sentinel://host:26379/mymaster)",
    ),
    "query": (
        "{url: 'rediss://r:6380/0?ssl_cert_reqs=none'}",
        "url: must not contain a query (?...) or a fragment (#...)",
    ),
    "spaces": ("{url: 'redis://red is:6379'}", "url: must not contain spaces or control characters"),
    "no-url": ("{timeout: 50ms}", "url: is required"),
    "zero-timeout": ("{url: 'redis://r:6379', timeout: 0}", "timeout: must be more than 0s and at most 5s"),
    "long-timeout": ("{url: 'redis://r:6379', timeout: 10s}", "timeout: must be more than 0s and at most 5s"),
    "milliseconds-meant": (
        "{url: 'redis://r:6379', timeout: 50}",
        "timeout: must be more than 0s and at most 5s: 50 without a unit is read as seconds (write 50ms for "
        "milliseconds)",
    ),
    "on-error": ("{url: 'redis://r:6379', on_error: retry}", "on_error: must be 'allow' or 'deny'"),
    "prefix": (
        "{url: 'redis://r:6379', prefix: 'a b'}",
        "prefix: may contain only letters, digits, '_', '.', ':' and '-'",
    ),
    "unknown-key": (
        "{url: 'redis://r:6379', db: 1}",
        'db: unknown key "db" (allowed: on_error, password, prefix, timeout, url)',
    ),
    "not-a-mapping": ("redis://r", "must be a mapping"),
}


@pytest.mark.parametrize(("text", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_each_mistake_is_one_located_error(text: str, message: str) -> None:
    located = "rate_limit_store" + ("." if message[0] != "m" else ": ") + message
    assert errors(text) == [f"p.yaml:7: {located}"]


ENCODE = (
    "; if the password holds / ? # @ + = or similar characters, percent-encode it in the URL (/ as %2F, + as %2B,"
    " = as %3D, # as %23, ? as %3F, @ as %40) or give it as `password:` (from ${file:...})"
)
PASSWORD_CHARACTERS = {
    # An Azure Cache for Redis key: `/` ends the host part early, so the "host" is a piece of the password.
    "slash-plus-equals": (
        "rediss://:Ab+cd/EfGh=@myredis.redis.cache.windows.net:6380/0",
        "must name each host with its port (redis://host:6379/0)" + ENCODE,
    ),
    "question-mark": (
        "rediss://:AbcdEfGh?x=@myredis.redis.cache.windows.net:6380/0",
        "must name each host with its port (redis://host:6379/0)" + ENCODE,
    ),
    "hash-and-at": (
        "redis://:p@ss/w#rd@127.0.0.1:6379/0",
        "must name each host with its port (redis://host:6379/0)" + ENCODE,
    ),
    "bracket": ("redis://:ab[cd@redis:6379/0", "is not a URL the client can read" + ENCODE),
    "no-password-no-hint": ("redis://redis/0", "must name each host with its port (redis://host:6379/0)"),
}


@pytest.mark.parametrize(("url", "message"), PASSWORD_CHARACTERS.values(), ids=PASSWORD_CHARACTERS.keys())
def test_a_password_with_url_characters_is_told_to_be_encoded_never_echoed(url: str, message: str) -> None:
    (error,) = errors("{url: '${REDIS_URL}'}", {"REDIS_URL": url})
    assert error == f"p.yaml:7: rate_limit_store.url: {message}"


def test_a_percent_encoded_password_is_taken() -> None:
    url = "rediss://:Ab%2Bcd%2FEfGh%3D@myredis.redis.cache.windows.net:6380/0"
    found, _ = store("{url: '${REDIS_URL}'}", {"REDIS_URL": url})
    assert found is not None and found.url == url


LITERAL = (
    "the Redis password is written in the policy file: give it as `password: ${file:...}` (a mounted Secret) or "
    "`${VAR}`, so that it is not stored or shown with the policy"
)
BOTH = "a password is given both in the URL and as `password:`; `password:` is used: remove the other"
DATABASE = (
    "database 16: Redis has databases 0 to 15 unless its `databases` setting is raised; a higher number fails every "
    "request (`error`)"
)
LIKELY_MISTAKES = {
    "literal-in-the-url": ("{url: 'rediss://:pw-literal@r:6380/0'}", {}, [f"url: {LITERAL}"]),
    "literal-password-key": ("{url: 'rediss://r:6380/0', password: pw-literal}", {}, [f"password: {LITERAL}"]),
    "url-from-a-variable": ("{url: '${REDIS_URL}'}", {"REDIS_URL": "rediss://:pw@r:6380/0"}, []),
    "password-in-the-url-from-a-variable": ("{url: 'rediss://:${PW}@r:6380/0'}", {"PW": "pw-secret"}, []),
    "password-from-a-variable": ("{url: 'rediss://r:6380/0', password: '${PW}'}", {"PW": "pw-secret"}, []),
    "both": (
        "{url: '${REDIS_URL}', password: '${PW}'}",
        {"REDIS_URL": "rediss://:pw-a@r:6380/0", "PW": "pw-b"},
        [f"password: {BOTH}"],
    ),
    "database-16": ("{url: 'rediss://r:6380/16'}", {}, [f"url: {DATABASE}"]),
    "database-15": ("{url: 'rediss://r:6380/15'}", {}, []),
}


@pytest.mark.parametrize(("text", "environ", "warned"), LIKELY_MISTAKES.values(), ids=LIKELY_MISTAKES.keys())
def test_likely_mistakes_are_warned(text: str, environ: dict[str, str], warned: list[str]) -> None:
    _, warnings = store(text, environ)
    assert list(warnings) == [f"p.yaml:7: rate_limit_store.{w}" for w in warned]
    assert not [w for w in warnings if "pw-" in w]  # never the password itself


def test_a_bad_url_from_a_secret_is_never_echoed() -> None:
    (error,) = errors("{url: '${REDIS_URL}'}", {"REDIS_URL": "http://:hunter2-secret@redis"})
    assert "hunter2-secret" not in error


WARNINGS = {
    "clear-text-password-in-the-url": ("redis://:pw@redis.internal:6379", True),
    "clear-text-password-key": ("redis://redis.internal:6379", True),
    "tls": ("rediss://:pw@redis.internal:6380", False),
    "loopback": ("redis://:pw@127.0.0.1:6379", False),
    "no-password": ("redis://redis.internal:6379", False),
}


@pytest.mark.parametrize(("url", "warned"), WARNINGS.values(), ids=WARNINGS.keys())
def test_a_password_sent_in_clear_across_a_network_is_warned(url: str, warned: bool) -> None:
    password = ", password: pw" if url == "redis://redis.internal:6379" and warned else ""
    _, warnings = store(f"{{url: '{url}'{password}}}")
    assert [w for w in warnings if "clear text" in w] == (
        [
            "p.yaml:7: rate_limit_store.url: the Redis password crosses the network in clear text: use rediss:// (TLS) "
            "unless the network is private"
        ]
        if warned
        else []
    )
