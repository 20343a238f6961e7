"""The state parameter: generation, validation, digest, constant-time comparison."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pdauth.errors import CallbackError
from pdauth.oauth import constant_time_equals, generate_state, state_digest, validate_state


def test_state_is_43_base64url_characters_of_32_bytes() -> None:
    state = generate_state()
    assert len(state) == 43
    assert validate_state(state) == state
    assert len(base64.urlsafe_b64decode(state + "=")) == 32


def test_states_are_unique() -> None:
    assert len({generate_state() for _ in range(1000)}) == 1000


@pytest.mark.parametrize("value", ["a", "A-z_09", "x" * 256])
def test_valid_states(value: str) -> None:
    assert validate_state(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "x" * 257, "abc def", "abc+def", "abc=", "abc/def", "abc\n", "abcé", "a.b", None, 42],
)
def test_invalid_states_raise_callback_error_without_echo(value: object) -> None:
    with pytest.raises(CallbackError) as info:
        validate_state(value)  # type: ignore[arg-type]
    assert info.value.error == "invalid_request"
    if isinstance(value, str) and value:
        assert value not in str(info.value)


def test_state_digest_is_hex_sha256() -> None:
    state = generate_state()
    assert state_digest(state) == hashlib.sha256(state.encode()).hexdigest()
    assert len(state_digest(state)) == 64
    assert state_digest(state) != state_digest(generate_state())


def test_state_digest_refuses_malformed_states() -> None:
    with pytest.raises(CallbackError):
        state_digest("not a state")


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abc", "abd")
    assert not constant_time_equals("abc", "abcd")
    assert constant_time_equals("é\ud800", "é\ud800")  # non-ASCII and lone surrogates are fine
    assert not constant_time_equals("é", "e")


def test_constant_time_equals_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert constant_time_equals("x", "x")
    assert calls == [(b"x", b"x")]
