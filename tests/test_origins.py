"""The origin policy (pure): who may read the stream, and the CORS answers that say so."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transports.config import decode_config
from transports.options import NoOptions
from transports.origins import (
    ALLOWED_HEADERS,
    OriginError,
    OriginPolicy,
    normalize_patterns,
)
from transports.settings import Settings, SettingsError

DEFAULT = OriginPolicy()


@pytest.mark.parametrize(
    "origin",
    [
        None,  # not a browser: always served
        "http://127.0.0.1:8000",
        "http://127.0.0.1",
        "https://127.0.0.1:8443",
        "http://127.9.8.7:1234",  # all of 127.0.0.0/8 is loopback
        "http://localhost:3000",
        "http://LOCALHOST:3000",
        "http://[::1]:5173",
        "https://[::1]",
    ],
)
def test_loopback_pages_and_non_browsers_are_allowed_by_default(origin: str | None) -> None:
    assert DEFAULT.allows(origin, "127.0.0.1:8889")


@pytest.mark.parametrize(
    "origin",
    [
        "http://example.org",
        "https://evil.test:8889",
        "null",  # a file: page or a sandboxed iframe
        "http://127.0.0.1.evil.test",
        "http://localhost.evil.test",
        "http://user@127.0.0.1:8000",
        "ws://127.0.0.1:8000",  # not a web page's scheme
        "file://",
        "http://127.0.0.1:8000/path",
        "http://127.0.0.1:99999",
        "",
        "http://",
        "127.0.0.1:8000",
        "http://127.0.0.1:8000 http://evil.test",
    ],
)
def test_other_origins_are_refused_by_default(origin: str) -> None:
    assert not DEFAULT.allows(origin, "127.0.0.1:8889")


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://bench.lan:8889", "bench.lan:8889", True),
        ("http://bench.lan:8889", "BENCH.lan:8889", True),
        ("http://bench.lan:8889", "bench.lan:8890", False),
        ("http://bench.lan", "bench.lan", True),
        ("http://bench.lan", "bench.lan:80", True),
        # Behind a TLS terminator: the page is https, the Host carries no port.
        ("https://bench.lan", "bench.lan", True),
        ("http://[fd00::5]:8889", "[fd00::5]:8889", True),
        ("http://bench.lan:8889", "bench.lan:8889/x", False),
        ("http://bench.lan:8889", "", False),
    ],
)
def test_the_servers_own_page_is_allowed(origin: str, host: str, allowed: bool) -> None:
    assert DEFAULT.allows(origin, host) is allowed


def test_configured_origins_exact_and_any_port() -> None:
    policy = OriginPolicy(["https://app.example.org", "http://dash.test:*"])
    assert policy.allows("https://app.example.org", "x")
    assert policy.allows("https://app.example.org:443", "x")  # the same origin, spelt out
    assert not policy.allows("http://app.example.org", "x")  # another scheme
    assert not policy.allows("https://app.example.org:8443", "x")  # another port
    assert not policy.allows("https://sub.app.example.org", "x")
    assert policy.allows("http://dash.test:1", "x") and policy.allows("http://dash.test", "x")
    assert not policy.allows("https://dash.test", "x")
    assert not policy.allows("null", "x")


def test_star_allows_every_origin_even_null() -> None:
    policy = OriginPolicy(["*"])
    assert policy.allows_any
    assert all(policy.allows(o, "x") for o in ("null", "https://any.where", "garbage"))


@pytest.mark.parametrize(
    ("entries", "normalized"),
    [
        (["HTTPS://App.Example.org:443/"], ("https://app.example.org",)),
        (["http://a.test:80", "http://a.test"], ("http://a.test",)),
        (["http://a.test:8080", "http://a.test:*"], ("http://a.test:8080", "http://a.test:*")),
        (["http://[::1]:9000"], ("http://[::1]:9000",)),
        (["*", "*"], ("*",)),
        ([], ()),
    ],
)
def test_entries_are_written_as_browsers_send_origins(
    entries: list[str], normalized: tuple[str, ...]
) -> None:
    assert normalize_patterns(entries) == normalized


@pytest.mark.parametrize(
    "entry",
    [
        "example.org",
        "http://a.test/path",
        "http://a.test?x=1",
        "http://*.a.test",
        "http://a.test:",
        "http://a.test:*:*",
        "http://user@a.test",
        "",
        "http://a.test:8080:*",
        "http://a .test",
    ],
)
def test_malformed_entries_are_refused_by_name(entry: str) -> None:
    with pytest.raises(OriginError, match="is not an origin"):
        normalize_patterns([entry])
    with pytest.raises(SettingsError, match="allow_origins"):
        Settings(allow_origins=(entry,))


def test_the_setting_travels_in_the_settings_document() -> None:
    doc = '{"settings": {"allow_origins": ["HTTP://Page.test:8000"]}}'
    settings, _ = decode_config(doc, Settings(), NoOptions())
    assert settings.allow_origins == ("http://page.test:8000",)
    assert OriginPolicy.from_settings(settings).allows("http://page.test:8000", "x")
    with pytest.raises(SettingsError, match="allow_origins"):
        decode_config(
            '{"settings": {"allow_origins": "http://page.test"}}', Settings(), NoOptions()
        )


def test_cors_headers_name_an_allowed_origin_and_always_vary() -> None:
    assert DEFAULT.cors_headers(None) == {"Vary": "Origin"}
    assert DEFAULT.cors_headers("http://localhost:3000") == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": "http://localhost:3000",
    }
    assert DEFAULT.cors_headers("http://evil.test") == {"Vary": "Origin"}
    star = OriginPolicy(["*"])
    # The origin itself, never "*": an answer names the one page it is for.
    assert star.cors_headers("https://a.test")["Access-Control-Allow-Origin"] == "https://a.test"


def test_preflight_of_an_allowed_page() -> None:
    answer = DEFAULT.preflight("http://localhost:3000", "127.0.0.1:8889", "GET")
    assert answer.status == 204
    headers = answer.headers
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "GET" in headers["Access-Control-Allow-Methods"]
    assert "Last-Event-ID" in headers["Access-Control-Allow-Headers"].split(", ")
    assert set(ALLOWED_HEADERS) == set(headers["Access-Control-Allow-Headers"].split(", "))
    assert "Origin" in headers["Vary"]
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Private-Network" not in headers
    private = DEFAULT.preflight("http://localhost:3000", "x", "GET", private_network=True)
    assert private.headers["Access-Control-Allow-Private-Network"] == "true"


def test_preflight_refusals_are_403_without_cors_headers() -> None:
    refused = DEFAULT.preflight("http://evil.test", "127.0.0.1:8889", "GET")
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "origin not allowed: 'http://evil.test'" in refused.reason
    wrong_method = DEFAULT.preflight("http://localhost:3000", "x", "DELETE")
    assert wrong_method.status == 403 and "DELETE" in wrong_method.reason
    assert "Access-Control-Allow-Origin" not in wrong_method.headers


def test_options_that_is_no_preflight_lists_the_methods() -> None:
    for origin, method in [(None, None), ("http://localhost:1", None), (None, "GET")]:
        answer = DEFAULT.preflight(origin, "x", method)
        assert answer.status == 204
        assert answer.headers == {"Allow": "GET, HEAD, OPTIONS"}


@given(st.text(max_size=400), st.text(max_size=100))
def test_any_header_gets_a_verdict_never_an_exception(origin: str, host: str) -> None:
    assert isinstance(DEFAULT.allows(origin, host), bool)
    assert DEFAULT.preflight(origin, host, "GET").status in (204, 403)
