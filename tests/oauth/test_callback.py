"""The authorization response (RFC 6749 §4.1.2, §4.1.2.1; RFC 9207 §2.4)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from starlette.datastructures import QueryParams

from pdauth.errors import AuthorizationDeniedError, CallbackError
from pdauth.oauth import (
    AuthorizationDenied,
    AuthorizationGranted,
    generate_state,
    parse_callback,
)

STATE = generate_state()
CODE = "c0de+With/Symbols~!"  # visible ASCII, as an authorization server may send
ISSUER = "https://app.pagerduty.com/global/oauth/anonymous"
KNOWN = ("code", "state", "error", "error_description", "error_uri", "subdomain", "iss")
RFC_ERRORS = (
    "access_denied",
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
)


def raw(pairs: Sequence[tuple[str, str]]) -> str:
    return urlencode(pairs, quote_via=quote)


def rejected(query: object, **kwargs: object) -> CallbackError:
    with pytest.raises(CallbackError) as info:
        parse_callback(query, **kwargs)  # type: ignore[arg-type]
    assert info.value.error == "invalid_request"
    assert type(info.value) is CallbackError
    return info.value


def attempt(query: object) -> AuthorizationGranted | AuthorizationDenied | CallbackError:
    """The parse result, or the CallbackError it raised (any other exception propagates)."""
    try:
        return parse_callback(query)  # type: ignore[arg-type]
    except CallbackError as error:
        return error


# --- the happy paths -------------------------------------------------------------------


def test_granted_from_a_raw_query() -> None:
    result = parse_callback(raw([("code", CODE), ("state", STATE)]))
    assert result == AuthorizationGranted(code=CODE, state=STATE, subdomain=None, iss=None)


def test_granted_from_pairs_mapping_and_starlette() -> None:
    pairs = [("state", STATE), ("code", CODE), ("subdomain", "acme-eu")]
    expected = AuthorizationGranted(code=CODE, state=STATE, subdomain="acme-eu", iss=None)
    assert parse_callback(pairs) == expected
    assert parse_callback(tuple(pairs)) == expected
    assert parse_callback(dict(pairs)) == expected
    assert parse_callback({"state": [STATE], "code": (CODE,), "subdomain": "acme-eu"}) == expected
    params = QueryParams(raw(pairs))
    assert parse_callback(params.multi_items()) == expected
    assert parse_callback(params) == expected


def test_a_leading_question_mark_is_allowed() -> None:
    assert isinstance(
        parse_callback("?" + raw([("code", CODE), ("state", STATE)])), AuthorizationGranted
    )


def test_plus_in_a_raw_query_is_a_space_and_percent_2b_is_a_plus() -> None:
    assert parse_callback(f"code=a%2Bb&state={STATE}") == AuthorizationGranted("a+b", STATE)
    rejected(f"code=a+b&state={STATE}")  # "a b": a space is not allowed in a code


def test_unknown_parameters_are_ignored_even_when_repeated() -> None:
    query = raw([("foo", "1"), ("code", CODE), ("foo", "2"), ("state", STATE), ("bar", "")])
    assert parse_callback(query) == AuthorizationGranted(CODE, STATE)


def test_the_repr_shows_neither_code_nor_state() -> None:
    granted = parse_callback(raw([("code", CODE), ("state", STATE), ("iss", ISSUER)]))
    denied = parse_callback(raw([("error", "access_denied"), ("state", STATE)]))
    for value in (granted, denied):
        assert CODE not in repr(value)
        assert STATE not in repr(value)
    assert ISSUER in repr(granted)


def test_code_limits() -> None:
    assert parse_callback([("code", "x" * 1024), ("state", STATE)]) == AuthorizationGranted(
        "x" * 1024, STATE
    )
    for bad in ["", "x" * 1025, "a b", "a\tb", "é", "a\x7f", "a\x00"]:
        error = rejected([("code", bad), ("state", STATE)])
        assert "code must be" in str(error)


# --- denials ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", RFC_ERRORS)
def test_every_rfc_error_code_is_kept(code: str) -> None:
    result = parse_callback(raw([("error", code), ("state", STATE)]))
    assert result == AuthorizationDenied(error=code, description=None, state=STATE, iss=None)


@pytest.mark.parametrize("code", ["access_denied_x", "consent_required", "<script>", "x y", "!"])
def test_other_error_codes_become_unknown_error(code: str) -> None:
    result = parse_callback([("error", code), ("state", STATE)])
    assert isinstance(result, AuthorizationDenied)
    assert result.error == "unknown_error"
    assert code not in repr(result)


@pytest.mark.parametrize("code", ["", "é", 'a"b', "a\\b", "a\nb", "a\x00"])
def test_error_codes_outside_the_rfc_alphabet_are_refused(code: str) -> None:
    error = rejected([("error", code), ("state", STATE)])
    assert "error parameter" in str(error)


def test_pagerduty_denial() -> None:
    query = (
        "error=access_denied&error_description=The+resource+owner+or+authorization+server+"
        f"denied+the+request.&state={STATE}&error_uri=https%3A%2F%2Fevil.example%2F"
    )
    result = parse_callback(query)
    assert result == AuthorizationDenied(
        error="access_denied",
        description="The resource owner or authorization server denied the request.",
        state=STATE,
    )
    assert isinstance(result, AuthorizationDenied)
    assert "evil" not in repr(result)
    error = result.to_error()
    assert isinstance(error, AuthorizationDeniedError)
    assert (error.error, error.description, error.uri) == (
        "access_denied",
        "The resource owner or authorization server denied the request.",
        None,
    )


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("plain", "plain"),
        ("  padded  ", "padded"),
        ("", None),
        ("\x00\x01\n\t", None),
        ('say "hi" \\ bye', "say hi  bye"),
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),  # escaping is the page's job
        ("café ünïcode", "caf ncode"),
        ("line1\r\nLocation: x", "line1Location: x"),
        ("x" * 3_000, "x" * 500),
        ("y" * 499 + " " + "z", "y" * 499),
    ],
)
def test_error_description_is_sanitised(description: str, expected: str | None) -> None:
    result = parse_callback(
        [("error", "access_denied"), ("state", STATE), ("error_description", description)]
    )
    assert isinstance(result, AuthorizationDenied)
    assert result.description == expected
    if expected is not None:
        assert len(expected) <= 500


def test_an_error_description_in_a_raw_query_longer_than_the_limit_is_refused() -> None:
    query = raw([("error", "access_denied"), ("state", STATE), ("error_description", "x" * 5000)])
    rejected(query)


# --- malformed callbacks ---------------------------------------------------------------


def test_state_is_required_and_checked_first() -> None:
    assert "no state" in str(rejected([("code", CODE)]))
    assert "no state" in str(rejected([("error", "access_denied")]))
    assert "no state" in str(rejected(""))
    assert "state must be" in str(rejected([("code", CODE), ("state", "")]))
    assert "state must be" in str(rejected([("code", CODE), ("state", "a b")]))
    assert "state must be" in str(rejected([("code", CODE), ("state", "x" * 257)]))
    assert "state must be" in str(rejected([("error", "access_denied"), ("state", "a/b")]))


@pytest.mark.parametrize("name", KNOWN)
def test_every_known_parameter_at_most_once(name: str) -> None:
    pairs = [("code", CODE), ("state", STATE), (name, "a"), (name, "b")]
    if name == "error":
        pairs = pairs[1:]
    assert f"the {name} parameter appears more than once" in str(rejected(pairs))
    assert f"the {name} parameter appears more than once" in str(rejected(raw(pairs)))
    mapping = {key: value for key, value in pairs if key != name}
    mapping[name] = ["a", "b"]  # type: ignore[assignment]
    rejected(mapping)


def test_identical_repeated_values_are_still_refused() -> None:
    rejected([("code", CODE), ("state", STATE), ("state", STATE)])


def test_code_and_error_together_are_refused() -> None:
    error = rejected([("code", CODE), ("error", "access_denied"), ("state", STATE)])
    assert "both code and error" in str(error)


def test_neither_code_nor_error_is_refused() -> None:
    assert "neither code nor error" in str(rejected([("state", STATE), ("foo", "bar")]))


@pytest.mark.parametrize("subdomain", ["", "Acme", "acme.evil.com", "a" * 64, "<b>"])
def test_malformed_subdomain_is_refused(subdomain: str) -> None:
    error = rejected([("code", CODE), ("state", STATE), ("subdomain", subdomain)])
    assert "subdomain" in str(error)


def test_size_limit_of_a_raw_query() -> None:
    base = f"code={quote(CODE, safe='')}&state={STATE}&pad="
    fits = base + "x" * (4096 - len(base))
    assert isinstance(parse_callback(fits), AuthorizationGranted)
    assert "longer than 4096 bytes" in str(rejected(fits + "x"))
    # 4096 characters but more bytes: the limit is in bytes.
    multibyte = base + "é" * ((4096 - len(base)) // 2 + 1)
    assert len(multibyte) <= 4096
    rejected(multibyte)
    rejected("state=" + "x" * 1_000_000)


def test_size_limit_of_pairs_and_mappings_counts_the_encoded_form() -> None:
    base = [("code", CODE), ("state", STATE)]
    used = len(urlencode(base)) + len("&pad=")
    assert isinstance(parse_callback([*base, ("pad", "x" * (4096 - used))]), AuthorizationGranted)
    rejected([*base, ("pad", "x" * (4096 - used + 1))])
    # "/" encodes to three bytes, so 1400 of them are over the limit.
    assert "longer than" in str(rejected([*base, ("pad", "/" * 1400)]))
    rejected([*base, ("pad", "x" * 10_000_000)])
    rejected([*base] + [("", "")] * 3000)
    rejected({"code": CODE, "state": STATE, "pad": ["x"] * 2000})


def test_invalid_percent_encoding_is_refused() -> None:
    assert "UTF-8" in str(rejected(f"code=%ff&state={STATE}"))


@pytest.mark.parametrize(
    "query",
    [
        None,
        42,
        b"code=a&state=b",
        bytearray(b"x"),
        object(),
        [("code", CODE, "extra"), ("state", STATE)],
        [("code",), ("state", STATE)],
        ["code=a", "state=b"],
        [("code", 1), ("state", STATE)],
        [(b"code", b"a")],
        [None],
        {"code": 1, "state": STATE},
        {"code": b"a", "state": STATE},
        {"code": [1], "state": STATE},
        {1: "a", "state": STATE},
    ],
)
def test_other_shapes_are_refused(query: object) -> None:
    rejected(query)


# --- the issuer (RFC 9207) ---------------------------------------------------------------


def test_iss_is_returned_and_compared_exactly() -> None:
    pairs = [("code", CODE), ("state", STATE), ("iss", ISSUER)]
    assert parse_callback(pairs, issuer=ISSUER) == AuthorizationGranted(CODE, STATE, iss=ISSUER)
    assert parse_callback(pairs) == AuthorizationGranted(CODE, STATE, iss=ISSUER)
    mismatch = "does not name the expected issuer"
    assert mismatch in str(rejected(pairs, issuer=ISSUER + "/"))
    assert mismatch in str(rejected(pairs, issuer="https://identity.pagerduty.com"))


def test_iss_is_checked_on_denials_too() -> None:
    pairs = [("error", "access_denied"), ("state", STATE), ("iss", "https://evil.example")]
    rejected(pairs, issuer=ISSUER)
    denied = parse_callback([*pairs[:2], ("iss", ISSUER)], issuer=ISSUER)
    assert isinstance(denied, AuthorizationDenied)
    assert denied.iss == ISSUER


def test_missing_iss_is_accepted_unless_required() -> None:
    pairs = [("code", CODE), ("state", STATE)]
    assert parse_callback(pairs, issuer=ISSUER) == AuthorizationGranted(CODE, STATE)
    assert "no iss" in str(rejected(pairs, issuer=ISSUER, require_iss=True))


@pytest.mark.parametrize("iss", ["", "https://a b", "x" * 2049, "https://é"])
def test_malformed_iss_is_refused(iss: str) -> None:
    assert "iss parameter is malformed" in str(
        rejected([("code", CODE), ("state", STATE), ("iss", iss)])
    )


# --- properties --------------------------------------------------------------------------

CANARY = "Zq9Canary"
STATE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)

ANY_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4),
    st.text(alphabet="%0123456789abcdefABCDEF+=&?;#", max_size=30),
    st.text(alphabet=VISIBLE, max_size=30),
    st.sampled_from(["", STATE, CODE, "%ff", "%", "%2", "%C3", "é", "x" * 1025, *RFC_ERRORS]),
)


def _mark(value: str, marker: str) -> str:
    return value[: len(value) // 2] + marker + value[len(value) // 2 :]


@st.composite
def callback_pairs(draw: st.DrawFn, marker: str = "") -> list[tuple[str, str]]:
    """Pairs that look like a callback: a state (usually well formed) and known parameters.

    With a ``marker``, every value and every unknown name carries it (a canary).
    """
    state = draw(st.one_of(st.text(alphabet=STATE_CHARS, min_size=1, max_size=40), ANY_TEXT))
    pairs = [("state", _mark(state, marker))]
    names = draw(st.lists(st.sampled_from((*KNOWN, "unknown")), max_size=6))
    for name in names:
        value = draw(ANY_TEXT)
        pairs.append((_mark(name, marker) if name == "unknown" else name, _mark(value, marker)))
    return list(draw(st.permutations(pairs)))


def _raw_from_pairs(pairs: list[tuple[str, str]], encode: bool) -> str:
    if encode:
        return urlencode(pairs, encoding="utf-8", errors="surrogatepass")
    return "&".join(f"{name}={value}" for name, value in pairs)


def _mapping_of_lists(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    mapping: dict[str, list[str]] = {}
    for name, value in pairs:
        mapping.setdefault(name, []).append(value)
    return mapping


def _renderings(pairs: st.SearchStrategy[list[tuple[str, str]]]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.builds(_raw_from_pairs, pairs, st.booleans()),
        pairs,
        pairs.map(tuple),
        pairs.map(dict),
        pairs.map(_mapping_of_lists),
    )


ARBITRARY_PAIRS = st.lists(st.tuples(st.one_of(st.sampled_from(KNOWN), ANY_TEXT), ANY_TEXT))
QUERIES = st.one_of(
    _renderings(callback_pairs()),
    _renderings(ARBITRARY_PAIRS),
    ANY_TEXT,
    st.dictionaries(ANY_TEXT, st.one_of(ANY_TEXT, st.lists(ANY_TEXT, max_size=3)), max_size=8),
    st.integers(min_value=4000, max_value=200_000).map(lambda n: "state=" + "x" * n),
    st.integers(min_value=4000, max_value=200_000).map(lambda n: [("code", "x" * n)]),
    st.lists(st.one_of(st.none(), st.integers(), st.binary(max_size=5), st.tuples(ANY_TEXT))),
    st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.floats()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(QUERIES)
@example("%ff")
@example(f"state={STATE}&code=%C3")
@example(f"state={STATE}&error=%ff")
@example([("state", STATE), ("code", "\ud800")])
def test_arbitrary_queries_only_ever_raise_callback_error(query: object) -> None:
    outcome = attempt(query)
    if isinstance(outcome, CallbackError):
        assert outcome.error == "invalid_request"
    else:
        assert isinstance(outcome, AuthorizationGranted | AuthorizationDenied)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_renderings(callback_pairs(CANARY)))
def test_error_messages_never_echo_the_query(query: object) -> None:
    outcome = attempt(query)
    if isinstance(outcome, CallbackError):
        for text in (str(outcome), repr(outcome), outcome.description or "", repr(outcome.args)):
            assert CANARY.lower() not in text.lower()


@settings(max_examples=150, deadline=None)
@given(
    code=st.text(alphabet=VISIBLE, min_size=1),
    state=st.text(alphabet=STATE_CHARS, min_size=1, max_size=256),
    extra=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=20)), max_size=3),
)
def test_well_formed_grants_round_trip(code: str, state: str, extra: list[tuple[str, str]]) -> None:
    extra = [(name, value) for name, value in extra if name not in KNOWN]
    pairs = [*extra, ("code", code[:1024]), ("state", state)]
    expected = AuthorizationGranted(code=code[:1024], state=state)
    for query in (pairs, raw(pairs), urlencode(pairs)):
        assert parse_callback(query) == expected
