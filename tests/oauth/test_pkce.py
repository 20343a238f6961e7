"""PKCE (RFC 7636): verifier generation and validation, the S256 challenge."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.oauth import generate_code_verifier, s256_challenge, validate_code_verifier

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.mark.parametrize(("nbytes", "length"), [(32, 43), (33, 44), (64, 86), (95, 127), (96, 128)])
def test_verifier_length_follows_the_byte_count(nbytes: int, length: int) -> None:
    verifier = generate_code_verifier(nbytes)
    assert len(verifier) == length
    assert validate_code_verifier(verifier) == verifier
    padded = verifier + "=" * (-len(verifier) % 4)
    assert len(base64.urlsafe_b64decode(padded)) == nbytes


def test_default_verifier_is_43_characters_of_256_bits() -> None:
    assert len(generate_code_verifier()) == 43


def test_verifiers_are_unique() -> None:
    assert len({generate_code_verifier() for _ in range(200)}) == 200


@pytest.mark.parametrize("nbytes", [0, 16, 31, 97, 1024, -1])
def test_other_sizes_are_refused(nbytes: int) -> None:
    with pytest.raises(ValueError, match="between 32 and 96"):
        generate_code_verifier(nbytes)


@pytest.mark.parametrize("nbytes", [True, 32.0, "32", None])
def test_non_int_sizes_are_refused(nbytes: object) -> None:
    with pytest.raises(TypeError):
        generate_code_verifier(nbytes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "verifier",
    [
        "",
        "a" * 42,
        "a" * 129,
        "a" * 42 + "=",
        "a" * 42 + "+",
        "a" * 42 + "/",
        "a" * 42 + " ",
        "a" * 42 + "é",
        "a" * 42 + "\n",
        "a" * 42 + "٣",  # a non-ASCII digit: \d would match it
        None,
        b"a" * 43,
    ],
)
def test_invalid_verifiers_are_refused_without_echo(verifier: object) -> None:
    with pytest.raises(ValueError, match="43-128") as info:
        validate_code_verifier(verifier)  # type: ignore[arg-type]
    if isinstance(verifier, str) and verifier:
        assert verifier not in str(info.value)
    with pytest.raises(ValueError, match="43-128"):
        s256_challenge(verifier)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=UNRESERVED, min_size=43, max_size=128))
def test_challenge_is_unpadded_base64url_sha256(verifier: str) -> None:
    challenge = s256_challenge(verifier)
    assert len(challenge) == 43
    assert "=" not in challenge
    digest = base64.urlsafe_b64decode(challenge + "=")
    assert digest == hashlib.sha256(verifier.encode("ascii")).digest()
