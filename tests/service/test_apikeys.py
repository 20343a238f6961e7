"""API keys are kept hashed and checked in constant time."""

from __future__ import annotations

import pytest

from pdauth.errors import ConfigurationError
from pdauth.service.apikeys import ApiKeyVerifier

KEY_A = "key-aaaaaaaaaaaaaaaaaaaa"
KEY_B = "key-bbbbbbbbbbbbbbbbbbbb"


def test_configured_keys_verify_and_others_do_not() -> None:
    verifier = ApiKeyVerifier.from_config(f"{KEY_A}, {KEY_B},")
    assert verifier.verify(f"Bearer {KEY_A}")
    assert verifier.verify(f"bearer {KEY_B}")
    for header in (None, "", KEY_A, f"Basic {KEY_A}", f"Bearer {KEY_A}x", "Bearer ", "Bearer é"):
        assert not verifier.verify(header)
    assert not verifier.verify("Bearer " + "x" * 10_000)


def test_plaintext_keys_are_not_kept() -> None:
    verifier = ApiKeyVerifier([KEY_A])
    assert KEY_A not in repr(verifier)
    assert all(KEY_A.encode() not in d for d in verifier._digests)


def test_no_keys_means_nothing_verifies() -> None:
    verifier = ApiKeyVerifier.from_config(None)
    assert not verifier.configured
    assert not verifier.verify(f"Bearer {KEY_A}")


def test_short_keys_are_a_configuration_error_without_the_value() -> None:
    with pytest.raises(ConfigurationError) as info:
        ApiKeyVerifier(["short-key"])
    assert "short-key" not in str(info.value)
    assert "PDAUTH_API_KEYS" in str(info.value)
