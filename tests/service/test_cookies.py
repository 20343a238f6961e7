"""Signed cookies: forgery, tampering, expiry and attributes."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from pdauth.service.cookies import (
    BINDING_COOKIE_LIFETIME,
    MAX_FLOWS,
    SESSION_LIFETIME,
    BindingCookie,
    CookieJar,
    CookieSigner,
    FlowBinding,
    new_session,
)

SECRET = b"s" * 32


def _request(cookies: dict[str, str]) -> Request:
    header = "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()
    return Request({"type": "http", "headers": [(b"cookie", header)] if cookies else []})


def test_sign_and_unsign_round_trip() -> None:
    signer = CookieSigner(SECRET, "session")
    assert signer.unsign(signer.sign({"a": 1, "b": "x"})) == {"a": 1, "b": "x"}


@pytest.mark.parametrize(
    "mangle",
    [
        # A changed signature character. Not the last one: of its 6 bits only 4 carry the
        # 32-byte MAC (43 base64 characters), and a change in the other 2 decodes to the same
        # bytes, which is no tampering at all (it made this case fail about 1 run in 16).
        lambda v: v[:-2] + ("A" if v[-2] != "A" else "B") + v[-1],
        lambda v: ("A" if v[0] != "A" else "B") + v[1:],
        lambda v: v.split(".")[0],
        lambda v: v + ".x",
        lambda v: "",
        lambda v: "é" + v,
        lambda v: v * 40,
    ],
)
def test_tampered_values_are_refused(mangle) -> None:
    signer = CookieSigner(SECRET, "session")
    assert signer.unsign(mangle(signer.sign({"a": 1}))) is None


def test_a_cookie_of_one_purpose_is_refused_for_another() -> None:
    value = CookieSigner(SECRET, "session").sign({"a": 1})
    assert CookieSigner(SECRET, "binding").unsign(value) is None
    assert CookieSigner(b"t" * 32, "session").unsign(value) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CookieSigner(b"short", "session")


def test_session_round_trip_and_expiry() -> None:
    jar = CookieJar(SECRET, secure=False)
    session = new_session(1000.0)
    response = Response()
    jar.write_session(response, session)
    cookie = response.headers["set-cookie"]
    value = cookie.split(";")[0].split("=", 1)[1]
    request = _request({"pdauth_session": value})
    assert jar.read_session(request, 1000.0) == session
    assert jar.read_session(request, 1000.0 + SESSION_LIFETIME + 1) is None
    assert "csrf" not in repr(session) or session.csrf not in repr(session)
    assert session.csrf not in repr(session)


def test_secure_cookies_use_the_host_prefix_and_attributes() -> None:
    jar = CookieJar(SECRET, secure=True, path="/mounted")
    response = Response()
    cookie_value = BindingCookie(jar.owner_tag("alice")).with_flow(
        FlowBinding(jar.state_tag("s" * 43), "b" * 43, 1000.0)
    )
    jar.write_binding(response, cookie_value)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-pdauth_binding=")
    lowered = cookie.lower()
    for attribute in ("httponly", "samesite=lax", "secure", "path=/;", "max-age=1200"):
        assert attribute in lowered + ";"
    assert "b" * 43 not in cookie  # the binding travels signed, base64-encoded JSON
    assert "alice" not in cookie


def test_plain_http_cookies_have_no_prefix_and_follow_the_mount_path() -> None:
    jar = CookieJar(SECRET, secure=False, path="/mounted")
    response = Response()
    jar.write_session(response, new_session(1.0))
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("pdauth_session=")
    assert "Path=/mounted" in cookie
    assert "secure" not in cookie.lower()


def test_binding_cookie_is_tied_to_its_owner() -> None:
    jar = CookieJar(SECRET, secure=False)
    cookie = BindingCookie(jar.owner_tag("alice"))
    assert jar.binding_matches_owner(cookie, "alice")
    assert not jar.binding_matches_owner(cookie, "bob")


def _read_back(jar: CookieJar, response: Response, now: float) -> BindingCookie | None:
    value = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    return jar.read_binding(_request({"pdauth_binding": value}), now)


def test_many_flows_keep_the_cookie_small_and_evict_the_oldest() -> None:
    jar = CookieJar(SECRET, secure=False)
    cookie = BindingCookie(jar.owner_tag("alice"))
    for i in range(50):
        cookie = cookie.with_flow(FlowBinding(jar.state_tag(f"state-{i}"), "b" * 43, 1000.0 + i))
    response = Response()
    jar.write_binding(response, cookie)
    assert len(response.headers["set-cookie"]) < 4096
    back = _read_back(jar, response, 1050.0)
    assert back is not None
    assert len(back.flows) == MAX_FLOWS
    assert back.find(jar.state_tag("state-49")) is not None
    assert back.find(jar.state_tag("state-0")) is None


def test_flows_expire_with_their_pending_authorization() -> None:
    jar = CookieJar(SECRET, secure=False)
    cookie = BindingCookie(jar.owner_tag("alice")).with_flow(
        FlowBinding(jar.state_tag("s1"), "b1", 1000.0)
    )
    response = Response()
    jar.write_binding(response, cookie)
    back = _read_back(jar, response, 1000.0 + BINDING_COOKIE_LIFETIME - 1)
    assert back is not None
    assert back.find(jar.state_tag("s1")) is not None
    expired = _read_back(jar, response, 1000.0 + BINDING_COOKIE_LIFETIME + 1)
    assert expired is not None
    assert expired.find(jar.state_tag("s1")) is None


def test_session_login_rotates_id_and_csrf() -> None:
    session = new_session(1.0)
    rotated = session.rotated(2.0, owner="alice", owner_until=100.0)
    assert rotated.sid != session.sid
    assert rotated.csrf != session.csrf
    assert rotated.owner_at(50.0) == "alice"
    assert rotated.owner_at(100.0) is None
