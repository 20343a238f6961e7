"""hypothesis over every service route that takes input: never a 5xx, only documented statuses.

Two services run on real loopback sockets against one emulator (also on a socket): *embedded*
(the host names the owner, here through an ``X-Test-User`` header) and *standalone* (owners
come from connect-session links). Generated input covers the callback's query string and the
browser's cookies — including flows really started in that browser and approved at PagerDuty,
then mutated (values swapped, dropped, repeated, an ``error=`` added), and cookies that are
random, tampered with, or validly signed around arbitrary JSON — the forms (CSRF, return_to,
the admin password, content types, raw bodies), path parameters, query parameters, and the
JSON API (bodies, API keys, ids, query parameters).

The status sets: for pages, the statuses the service documents for them (views.FLOW_FAILURES
and views.STATUS_PAGES: a flow failure is 400/403/502/503, a refused form 400/403/415, a
missing connection 404, oversized input 413/414, rate limiting 429); for the JSON API, exactly
the responses its OpenAPI document lists per operation. The database is healthy here, so 503
is not expected anywhere; 5xx other than the documented 502 ("PagerDuty unavailable", for a
callback that carries ``error=server_error``) fails the test. Pages must not echo the
callback's code or state.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, EmulatorServer
from pdauth.service import create_app
from pdauth.service.cookies import CookieJar, CookieSigner
from pdauth.service.openapi import openapi_document
from pdauth.service.server import ServiceServer, bind_socket
from pdauth.store import upgrade
from tests.service.conftest import (
    ADMIN_PASSWORD,
    API_KEY,
    SESSION_SECRET,
    csrf_of,
    header_owner,
    make_settings,
)

pytestmark = pytest.mark.slow

USER = "admin@acme.example"
# One TLS context for every client: building one per client (certifi's bundle) costs ~60 ms.
TLS = ssl.create_default_context()
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CLIENT_ID = "evidence-fuzz-app"
CLIENT_SECRET = "evidence-fuzz-secret"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)

# -- what the service documents -----------------------------------------------------------

PAGES: dict[tuple[str, str], frozenset[int]] = {
    ("GET", "/"): frozenset({200, 414}),
    ("GET", "/callback"): frozenset({303, 400, 403, 414, 429, 502}),
    ("POST", "/connect"): frozenset({303, 400, 403, 413, 414, 415, 429}),
    ("GET", "/connections/{id}"): frozenset({200, 404, 414}),
    ("GET", "/connections/{id}/disconnect"): frozenset({200, 404, 414}),
    ("POST", "/connections/{id}/disconnect"): frozenset({303, 400, 403, 404, 413, 414, 415}),
    ("POST", "/connections/{id}/remove"): frozenset({303, 400, 403, 404, 409, 413, 414, 415}),
    ("GET", "/connect-session"): frozenset({200, 400, 414, 429}),
    ("GET", "/admin"): frozenset({200, 414}),
    ("GET", "/metrics"): frozenset({200, 414}),
    ("POST", "/admin/login"): frozenset({303, 400, 403, 404, 413, 414, 415, 429}),
    ("POST", "/admin/logout"): frozenset({303, 400, 403, 413, 414, 415}),
    ("POST", "/admin/connections/{id}/disconnect"): frozenset({303, 400, 403, 404, 413, 414, 415}),
    # PagerDuty's deliveries: 2xx recorded (or a duplicate), 4xx refused for good, 503 retry.
    ("POST", "/pagerduty/webhooks/{key}"): frozenset({200, 202, 400, 401, 404, 410, 413, 414, 503}),
}


def api_statuses() -> dict[tuple[str, str], frozenset[int]]:
    """Per operation of /api/v1: exactly the statuses its OpenAPI document lists."""
    document = openapi_document("/api/v1")
    found: dict[tuple[str, str], frozenset[int]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "delete", "patch"):
                found[(method.upper(), path)] = frozenset(int(s) for s in operation["responses"])
    return found


API = api_statuses()

# -- the system under test ----------------------------------------------------------------


@dataclass
class Served:
    emulator: EmulatorServer
    embedded: str
    standalone: str
    connection_id: str
    http: httpx.Client  # the test's own calls (emulator, connect-session links)


def _register(http: httpx.Client, emulator: EmulatorServer, *redirect_uris: str) -> None:
    answer = http.post(
        emulator.url + "/_emulator/apps",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": list(redirect_uris),
            "scopes": "read",
        },
    )
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/pdauth.db"
    upgrade(database_url)
    with (
        EmulatorServer(EmulatorConfig(rate_limit=1_000_000)) as emulator,
        httpx.Client(verify=TLS) as http,
    ):
        socks = [bind_socket("127.0.0.1", 0) for _ in range(2)]
        bases = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in socks]
        keys = format_key(generate_key("fuzz"))  # one key ring: both services share the rows
        _register(http, emulator, *(base + "/callback" for base in bases))
        apps = [
            create_app(
                make_settings(
                    database_url,
                    client_id=CLIENT_ID,
                    client_secret=CLIENT_SECRET,
                    redirect_uri=base + "/callback",
                    identity_url=emulator.url,
                    api_url=emulator.url,
                    api_url_eu=emulator.eu_api_url,
                    connect_rate_limit=0,
                    pagerduty_events="incident.triggered",
                    encryption_keys=keys,
                ),
                resolver,
            )
            for base, resolver in zip(bases, (header_owner, None), strict=True)
        ]
        with ServiceServer(apps[0], sock=socks[0]) as a, ServiceServer(apps[1], sock=socks[1]) as b:
            with browser(a.url) as alice:
                callback = approve(http, emulator, start(http, alice, a.url))
                assert alice.get(callback).status_code == 303
            listed = http.get(
                a.url + "/api/v1/connections", headers={"Authorization": f"Bearer {API_KEY}"}
            ).json()
            yield Served(emulator, a.url, b.url, listed["connections"][0]["id"], http)


def browser(base: str, user: str | None = "alice") -> httpx.Client:
    return httpx.Client(
        base_url=base,
        headers={"x-test-user": user} if user else {},
        follow_redirects=False,
        verify=TLS,
    )


def start(
    http: httpx.Client, client: httpx.Client, base: str, *, standalone_owner: str | None = None
) -> str:
    """Start a flow in this browser; returns PagerDuty's authorize URL."""
    if standalone_owner is not None:
        link = http.post(
            base + "/api/v1/connect-sessions",
            json={"owner": standalone_owner},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert link.status_code == 201, link.text
        page = client.get(link.json()["url"][len(base) :])
        form = {"csrf_token": csrf_of(page.text), "connect_session": "1"}
    else:
        form = {"csrf_token": csrf_of(client.get("/").text)}
    answer = client.post("/connect", data=form)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def approve(http: httpx.Client, emulator: EmulatorServer, authorize_url: str) -> str:
    """The user approves at PagerDuty; returns the callback's path and query."""
    params = dict(parse_qsl(urlsplit(authorize_url).query))
    answer = http.post(
        emulator.url + "/_emulator/authorize",
        json={**params, "user": USER, "decision": "approve"},
    )
    assert answer.status_code == 200, answer.text
    target = urlsplit(answer.json()["redirect"])
    return f"{target.path}?{target.query}"


def page_csrf(client: httpx.Client) -> str:
    """This browser session's CSRF token, from the first page that carries a form."""
    for path in ("/", "/admin"):
        match = CSRF.search(client.get(path).text)
        if match:
            return match.group(1)
    raise AssertionError("no page carries a CSRF field")


def assert_documented(response: httpx.Response, allowed: frozenset[int], what: object) -> None:
    assert response.status_code < 500 or response.status_code in allowed, (
        what,
        response.status_code,
        response.text[:300],
    )
    assert response.status_code in allowed, (what, response.status_code, response.text[:300])


# -- strategies -----------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
token_like = st.from_regex(r"[A-Za-z0-9_\-]{0,64}", fullmatch=True)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
# Numbers as a signed cookie may carry them: around now (so the session is live), far off,
# too big for a float, not finite.
numbers = st.one_of(
    st.floats(min_value=-30_000, max_value=30).map(lambda d: time.time() + d),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -(10**400), 2**63, 0]),
)
owners = st.sampled_from(["alice", "fuzz-owner"]) | text
# A validly signed session whose fields have the right shape often enough to get past the
# first checks, with any field replaced by arbitrary JSON at times.
SESSION_FIELDS = {
    "sid": token_like | json_values,
    "csrf": token_like | json_values,
    "iat": numbers | json_values,
    "own": owners | st.none() | json_values,
    "own_exp": numbers | st.none(),
    "adm_exp": numbers | st.none(),
    "lnk": st.none()
    | st.tuples(owners, st.none() | st.just("/") | text, numbers, token_like).map(list)
    | json_values,
}
signed_session = st.fixed_dictionaries(SESSION_FIELDS) | st.fixed_dictionaries(
    {}, optional=SESSION_FIELDS
)
flow_entries = st.tuples(token_like | json_values, token_like | json_values, numbers).map(list)
signed_binding = st.fixed_dictionaries(
    {},
    optional={"o": token_like | json_values, "f": st.lists(flow_entries, max_size=3) | json_values},
)
SIGNERS = {
    purpose: CookieSigner(SESSION_SECRET.encode("utf-8"), purpose)
    for purpose in ("session", "binding")
}
COOKIE_NAMES = (CookieJar.SESSION, CookieJar.BINDING)
cookie_value = st.from_regex(r"[!#-+\--:<-\[\]-~]{0,120}", fullmatch=True)  # RFC 6265 octets


@st.composite
def cookie_jars(draw: st.DrawFn) -> dict[str, str]:
    """Random, validly signed (arbitrary JSON) or absent values for the service's cookies."""
    jar: dict[str, str] = {}
    for name, purpose in zip(COOKIE_NAMES, ("session", "binding"), strict=True):
        kind = draw(st.sampled_from(["none", "random", "signed"]))
        if kind == "random":
            jar[name] = draw(cookie_value)
        elif kind == "signed":
            data = draw(signed_session if purpose == "session" else signed_binding)
            jar[name] = SIGNERS[purpose].sign(data)
    if draw(st.booleans()):
        jar[draw(st.sampled_from(["other", "pdauth_sessio", "__Host-pdauth_session"]))] = draw(
            cookie_value
        )
    return jar


def cookie_header(jar: dict[str, str]) -> dict[str, str]:
    return {"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}


CALLBACK_KEYS = ("code", "state", "error", "error_description", "iss", "scope", "x")
ERRORS = ("access_denied", "server_error", "temporarily_unavailable", "invalid_scope", "")
pairs = st.lists(
    st.tuples(st.sampled_from(CALLBACK_KEYS) | text, st.sampled_from(ERRORS) | token_like | text),
    max_size=6,
)


@st.composite
def mutations(draw: st.DrawFn, real: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A real callback query, changed a little (or not at all)."""
    items = list(real)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "repeat", "replace", "add", "error", "shuffle"]))
        if op == "drop" and items:
            items.pop(draw(st.integers(0, len(items) - 1)))
        elif op == "repeat" and items:
            items.append(items[draw(st.integers(0, len(items) - 1))])
        elif op == "replace" and items:
            i = draw(st.integers(0, len(items) - 1))
            items[i] = (items[i][0], draw(token_like | text))
        elif op == "add":
            items.append(draw(st.tuples(st.sampled_from(CALLBACK_KEYS), token_like | text)))
        elif op == "error":
            items.append(("error", draw(st.sampled_from(ERRORS))))
        elif op == "shuffle":
            items = draw(st.permutations(items))
    return items


# -- the callback -------------------------------------------------------------------------


def _no_echo(response: httpx.Response, query: list[tuple[str, str]]) -> None:
    for key, value in query:
        if key in ("code", "state") and len(value) >= 16 and re.fullmatch(r"[\w\-]+", value):
            assert value not in response.text, f"the page echoes the callback's {key}"


@FUZZ
@given(data=st.data(), standalone=st.booleans(), real=st.booleans(), own_cookies=st.booleans())
def test_the_callback_never_fails_undocumented(
    served: Served, data: st.DataObject, standalone: bool, real: bool, own_cookies: bool
) -> None:
    base = served.standalone if standalone else served.embedded
    with browser(base, None if standalone else "alice") as client:
        if real:
            owner = "fuzz-owner" if standalone else None
            authorize = start(served.http, client, base, standalone_owner=owner)
            callback = approve(served.http, served.emulator, authorize)
            query = data.draw(mutations(parse_qsl(urlsplit(callback).query)), label="query")
        else:
            query = data.draw(pairs, label="query")
        headers = {} if own_cookies else cookie_header(data.draw(cookie_jars(), label="cookies"))
        if headers:
            client.cookies.clear()
        raw = data.draw(st.booleans(), label="raw")
        target = "/callback?" + (
            "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
            if raw
            else urlencode(query)
        )
        response = client.get(target, headers=headers)
    assert_documented(response, PAGES[("GET", "/callback")], target)
    _no_echo(response, query)


@FUZZ
@given(raw=st.binary(max_size=300), standalone=st.booleans())
def test_arbitrary_callback_bytes_never_fail_undocumented(
    served: Served, raw: bytes, standalone: bool
) -> None:
    base = served.standalone if standalone else served.embedded
    with browser(base) as client:
        response = client.get("/callback?" + quote(raw, safe="=&%+"))
    assert_documented(response, PAGES[("GET", "/callback")], raw)


# -- validly signed cookies around odd contents ------------------------------------------------

live = st.floats(min_value=-30_000, max_value=30).map(lambda d: time.time() + d)
mostly = lambda good, odd: st.one_of(good, good, good, odd)  # noqa: E731
likely_session = st.fixed_dictionaries(
    {
        "sid": mostly(token_like, json_values),
        "csrf": mostly(token_like, json_values),
        "iat": mostly(live, numbers | json_values),
        "own": st.none() | owners,
        "own_exp": st.none() | numbers,
        "adm_exp": st.none() | numbers,
        "lnk": mostly(
            st.tuples(owners, st.none() | st.just("/done"), numbers, token_like).map(list),
            json_values,
        ),
    }
)
likely_binding = st.fixed_dictionaries(
    {
        "o": mostly(token_like, json_values),
        "f": st.lists(st.tuples(token_like, token_like, numbers).map(list), max_size=3),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(session=likely_session, binding=likely_binding, standalone=st.booleans())
def test_validly_signed_cookies_with_odd_contents_never_fail_undocumented(
    served: Served, session: dict[str, Any], binding: dict[str, Any], standalone: bool
) -> None:
    """Signed cookies are trusted to be ours, not to be sane: a value no float can hold, NaN,
    a link of the wrong shape must still give a documented answer (the service may rotate its
    secret, or a bug may have written them)."""
    base = served.standalone if standalone else served.embedded
    jar = {
        CookieJar.SESSION: SIGNERS["session"].sign(session),
        CookieJar.BINDING: SIGNERS["binding"].sign(binding),
    }
    with browser(base) as client:
        home = client.get("/", headers=cookie_header(jar))
        callback = client.get("/callback?code=abc&state=def", headers=cookie_header(jar))
    assert_documented(home, PAGES[("GET", "/")], session)
    assert_documented(callback, PAGES[("GET", "/callback")], binding)


# -- forms ----------------------------------------------------------------------------------

CONTENT_TYPES = (
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "multipart/form-data; boundary=x",
    "application/json",
    "text/plain",
    "",
)
FORM_FIELDS = ("csrf_token", "return_to", "connect_session", "password", "x")
form_pairs = st.lists(st.tuples(st.sampled_from(FORM_FIELDS) | text, text | token_like), max_size=6)
FORM_ROUTES = (
    "/connect",
    "/connections/{id}/disconnect",
    "/connections/{id}/remove",
    "/admin/login",
    "/admin/logout",
    "/admin/connections/{id}/disconnect",
)


@FUZZ
@given(
    route=st.sampled_from(FORM_ROUTES),
    fields=form_pairs,
    use_csrf=st.booleans(),
    password=st.sampled_from([None, ADMIN_PASSWORD, "wrong"]),
    content_type=st.sampled_from(CONTENT_TYPES),
    raw=st.none() | st.binary(max_size=200),
    ident=st.sampled_from(["real", "missing"]) | text,
    standalone=st.booleans(),
    jar=st.none() | cookie_jars(),
)
def test_forms_never_fail_undocumented(
    served: Served,
    route: str,
    fields: list[tuple[str, str]],
    use_csrf: bool,
    password: str | None,
    content_type: str,
    raw: bytes | None,
    ident: str,
    standalone: bool,
    jar: dict[str, str] | None,
) -> None:
    base = served.standalone if standalone else served.embedded
    connection_id = {"real": served.connection_id, "missing": "pdc_missing"}.get(ident, ident)
    path = route.replace("{id}", quote(connection_id, safe=""))
    with browser(base) as client:
        if use_csrf:
            fields = [("csrf_token", page_csrf(client)), *fields]
        if password is not None:
            fields = [*fields, ("password", password)]
        headers = {"content-type": content_type} if content_type else {}
        if jar is not None:
            client.cookies.clear()
            headers.update(cookie_header(jar))
        body = raw if raw is not None else urlencode(fields).encode()
        response = client.post(path, content=body, headers=headers)
    assert_documented(response, PAGES[("POST", route)], (path, fields, content_type))


# -- pages with path and query parameters ---------------------------------------------------

GET_ROUTES = (
    "/",
    "/connections/{id}",
    "/connections/{id}/disconnect",
    "/connect-session",
    "/admin",
    "/metrics",
)


@FUZZ
@given(
    route=st.sampled_from(GET_ROUTES),
    ident=st.sampled_from(["real", "missing"]) | text,
    query=st.lists(
        st.tuples(st.sampled_from(["try", "token", "name[]", "x"]) | text, text), max_size=4
    ),
    real_link=st.booleans(),
    standalone=st.booleans(),
    jar=st.none() | cookie_jars(),
)
def test_pages_never_fail_undocumented(
    served: Served,
    route: str,
    ident: str,
    query: list[tuple[str, str]],
    real_link: bool,
    standalone: bool,
    jar: dict[str, str] | None,
) -> None:
    base = served.standalone if standalone else served.embedded
    connection_id = {"real": served.connection_id, "missing": "pdc_missing"}.get(ident, ident)
    path = route.replace("{id}", quote(connection_id, safe=""))
    if route == "/connect-session" and real_link:
        link = served.http.post(
            base + "/api/v1/connect-sessions",
            json={"owner": "fuzz-owner"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        ).json()["url"]
        query = [*parse_qsl(urlsplit(link).query), *query]
    with browser(base) as client:
        headers = {}
        if jar is not None:
            headers = cookie_header(jar)
        response = client.get(path + "?" + urlencode(query), headers=headers)
    assert_documented(response, PAGES[("GET", route)], (path, query))


# -- the JSON API ---------------------------------------------------------------------------

api_query = st.lists(
    st.tuples(
        st.sampled_from(["owner", "status", "limit", "after", "cursor", "type"]) | text,
        st.sampled_from(
            ["active", "needs_reauth", "0", "1", "100", "501", "-1", "connection.created"]
        )
        | text,
    ),
    max_size=5,
)
api_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"owner": text | json_values},
        optional={"return_to": text | json_values, "x": json_values},
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
API_ROUTES = tuple(API)
# What the proxy is asked to reach: PagerDuty REST paths, paths that try to leave the REST API,
# and anything at all.
proxy_paths = (
    st.sampled_from(
        [
            "users",
            "incidents",
            "services",
            "abilities",
            "oauth/token",
            "_emulator/stats",
            "incidents/../oauth/token",
            "users//x",
            "%2e%2e/oauth/token",
            "users/me.json",
        ]
    )
    | text
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    operation=st.sampled_from(API_ROUTES),
    ident=st.sampled_from(["real", "missing"]) | text,
    query=api_query,
    body=api_bodies,
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", ""]
    ),
    key=st.sampled_from([API_KEY, "wrong-key", None]),
    standalone=st.booleans(),
    proxied=proxy_paths,
)
def test_the_json_api_answers_only_documented_statuses(
    served: Served,
    operation: tuple[str, str],
    ident: str,
    query: list[tuple[str, str]],
    body: bytes,
    content_type: str,
    key: str | None,
    standalone: bool,
    proxied: str,
) -> None:
    method, template = operation
    base = served.standalone if standalone else served.embedded
    connection_id = {"real": served.connection_id, "missing": "pdc_missing"}.get(ident, ident)
    path = "/api/v1" + template.replace("{connection_id}", quote(connection_id, safe=""))
    path = path.replace("{path}", quote(proxied, safe="/%"))
    headers = {"content-type": content_type} if content_type else {}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    with httpx.Client(base_url=base, verify=TLS) as client:
        response = client.request(
            method,
            path + ("?" + urlencode(query) if query else ""),
            content=body if method in ("POST", "PUT") else None,
            headers=headers,
        )
    if response.status_code == 307 and path.endswith("/"):
        # Starlette's trailing-slash redirect (an empty id): to the same path without it.
        assert urlsplit(response.headers["location"]).path == path.rstrip("/")
        return
    assert_documented(response, API[operation], (method, path, query, body[:80]))
    if "/proxy/" in template and response.status_code == 204:
        return  # PagerDuty's empty answer, relayed
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    if "/proxy/" in template:
        # PagerDuty's own answers are relayed as they are (its error codes are integers).
        assert isinstance(answer, dict)
        return
    if response.status_code >= 400:
        assert isinstance(answer["error"]["code"], str)
        assert isinstance(answer["error"]["message"], str)


def test_every_route_that_takes_input_is_fuzzed(tmp_path: Any) -> None:
    """The route tables above cover the service: a new route must be added here too."""
    app = create_app(make_settings(f"sqlite:///{tmp_path}/never-opened.db"))
    routes = {
        (method, str(getattr(route, "path", "")))
        for route in app.routes
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }
    api = {
        (m, p[len("/api/v1") :].replace("{path:path}", "{path}"))
        for m, p in routes
        if p.startswith("/api/v1/")
    }
    assert api - {("GET", "/openapi.json")} == set(API)
    pages = {(m, p.replace("{connection_id}", "{id}")) for m, p in routes if "/api/" not in p}
    unfuzzed = {("GET", "/static/pdauth.css"), ("GET", "/healthz"), ("GET", "/robots.txt")}
    assert pages - unfuzzed == set(PAGES)


# -- PagerDuty's webhook deliveries -------------------------------------------------------------

# Visible ASCII: what an HTTP client can send as a header value at all (h11 refuses the rest).
header_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=120)


@FUZZ
@given(
    key=st.sampled_from(["", "k"]) | token_like | text,
    body=st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()),
    signature=st.none() | header_text | header_text.map(lambda t: "v1=" + t),
    webhook_id=st.none() | header_text,
    standalone=st.booleans(),
)
def test_pagerduty_deliveries_never_fail_undocumented(
    served: Served,
    key: str,
    body: bytes,
    signature: str | None,
    webhook_id: str | None,
    standalone: bool,
) -> None:
    base = served.standalone if standalone else served.embedded
    path = "/pagerduty/webhooks/" + quote(key, safe="")
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-pagerduty-signature"] = signature
    if webhook_id is not None:
        headers["x-webhook-id"] = webhook_id
    with httpx.Client(base_url=base) as client:
        response = client.post(path, content=body, headers=headers)
    if response.status_code == 307 and (key == "" or key.endswith("/")):
        return  # the decoded path ends in "/": Starlette's trailing-slash redirect
    assert_documented(response, PAGES[("POST", "/pagerduty/webhooks/{key}")], (path, body[:80]))
