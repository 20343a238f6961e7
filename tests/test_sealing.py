"""Sealing: every kind of stored secret round-trips, opens only where it was sealed, and the
ciphertexts written before pdauth.sealing existed still open (the associated data never moved).
"""

from __future__ import annotations

import pytest

from pdauth.crypto import KeyRing
from pdauth.errors import DecryptionError, KeyNotFoundError
from pdauth.sealing import GrantKey, Sealer, connection_ad, pending_ad, revocation_ad, token_ad

# Made by the code of commit 5857661 (before this module): KeyRing.encrypt with the associated
# data then built inline in pdauth.tokens, pdauth.connections and service/connect_sessions.
LEGACY_KEYS = "legacy:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"
USER = GrantKey("owner-1", "user", "PACCT", "PUSER")
APP = GrantKey("owner-2", "app", "as_account-us.acme", None)
LEGACY = {
    "user_access": "v1.legacy._G73QArhZi_h0XcJpNAVuobkRj_LHkdQw292B9epVda6JTNGywSDvTXx",
    "user_refresh": "v1.legacy.VHC84N0EHV8xaQhaQRkZ-_jjvHsAHa0P1sErIh_h8sPNN9BNap_pNzgwfg",
    "app_access": "v1.legacy.IqqgoKeWYUr0WZqK0XMpRBJ2cNnY-eb_QEw80nfaPBhTppcOx0Z67g",
    "verifier": "v1.legacy.rP8UVYk373hGbeRwdjeivpW9i93mj3i-LliMzX5i4rZ0vuwLi4U",
    "revocation": "v1.legacy.2i-AFT5RfbWHbY0hdaP2k7ImwVqmKBBKeikqfQQltCACCKjP6ID870IJog",
    "connect_session": (
        "v1.legacy.y4WXlhWm1ysJuXUCikKIrJxniFiZtFU-peBF55YnPKz32Y2GOnCfrLGHRFq1woBfLUhelzcAoMs"
        "A75eTkL27jRPuSI_HU_cXtyP9BV8ncAEcJObJ"
    ),
}
STATE_HASH = "a" * 64
SESSION_PAYLOAD = '{"o":"owner-1","r":"/done","e":4102444800.0,"j":"jti-1"}'


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(KeyRing.from_config(LEGACY_KEYS))


def test_ciphertexts_written_before_the_sealing_module_still_open(sealer: Sealer) -> None:
    assert sealer.open_token(USER, "access_token", LEGACY["user_access"]) == "access-token-A"
    assert sealer.open_token(USER, "refresh_token", LEGACY["user_refresh"]) == "refresh-token-R"
    assert sealer.open_token(APP, "access_token", LEGACY["app_access"]) == "app-access-X"
    assert sealer.open_verifier(STATE_HASH, LEGACY["verifier"]) == "verifier-V"
    assert (
        sealer.open_revocation("pdc_abc", "refresh_token", LEGACY["revocation"])
        == "refresh-token-Q"
    )
    assert sealer.open_connect_session(LEGACY["connect_session"]) == SESSION_PAYLOAD


def test_the_associated_data_bytes_are_the_storage_format() -> None:
    # Pinned: changing any of these makes every stored ciphertext of that kind unreadable.
    assert token_ad(USER, "access_token") == connection_ad(
        "owner-1", "user", "PACCT", "PUSER", "access_token"
    )
    assert token_ad(APP, "access_token") == connection_ad(
        "owner-2", "app", "as_account-us.acme", "", "access_token"
    )
    assert (
        len(
            {
                token_ad(USER, "access_token"),
                token_ad(USER, "refresh_token"),
                token_ad(APP, "access_token"),
                pending_ad(STATE_HASH),
                revocation_ad("pdc_abc", "refresh_token"),
                revocation_ad("pdc_abc", "access_token"),
            }
        )
        == 6
    )


def test_every_kind_round_trips(sealer: Sealer) -> None:
    for holder in (USER, APP):
        for column in ("access_token", "refresh_token"):
            sealed = sealer.seal_token(holder, column, f"{column}-secret")
            assert "secret" not in sealed
            assert sealer.open_token(holder, column, sealed) == f"{column}-secret"
    assert sealer.open_verifier("s", sealer.seal_verifier("s", "v" * 64)) == "v" * 64
    for hint in ("refresh_token", "access_token"):
        sealed = sealer.seal_revocation("pdc_1", hint, "tok")
        assert sealer.open_revocation("pdc_1", hint, sealed) == "tok"
    assert sealer.open_connect_session(sealer.seal_connect_session("{}")) == "{}"


def test_swapped_ciphertexts_do_not_open(sealer: Sealer) -> None:
    access = sealer.seal_token(USER, "access_token", "a")
    refresh = sealer.seal_token(USER, "refresh_token", "r")
    other_user = GrantKey("owner-1", "user", "PACCT", "POTHER")
    other_owner = GrantKey("owner-9", "user", "PACCT", "PUSER")
    with pytest.raises(DecryptionError):
        sealer.open_token(USER, "refresh_token", access)  # column swap
    with pytest.raises(DecryptionError):
        sealer.open_token(USER, "access_token", refresh)
    for holder in (other_user, other_owner, APP):  # row swap
        with pytest.raises(DecryptionError):
            sealer.open_token(holder, "access_token", access)
    verifier = sealer.seal_verifier("state-1", "v")
    with pytest.raises(DecryptionError):
        sealer.open_verifier("state-2", verifier)
    revocation = sealer.seal_revocation("pdc_1", "refresh_token", "t")
    with pytest.raises(DecryptionError):
        sealer.open_revocation("pdc_2", "refresh_token", revocation)
    with pytest.raises(DecryptionError):
        sealer.open_revocation("pdc_1", "access_token", revocation)
    # Across kinds: a token is not a verifier, a revocation or a connect-session link.
    with pytest.raises(DecryptionError):
        sealer.open_verifier(STATE_HASH, access)
    with pytest.raises(DecryptionError):
        sealer.open_connect_session(revocation)
    with pytest.raises(DecryptionError):
        sealer.open_token(USER, "access_token", sealer.seal_connect_session("x"))


def test_reseal_moves_a_token_to_the_primary_key_and_keeps_its_binding(sealer: Sealer) -> None:
    ring = KeyRing.from_config("new:" + "A" * 43 + "," + LEGACY_KEYS)
    rotated = Sealer(ring)
    moved = rotated.reseal_token(USER, "access_token", LEGACY["user_access"])
    assert moved.startswith("v1.new.")
    assert rotated.primary_key_id == "new"
    assert rotated.open_token(USER, "access_token", moved) == "access-token-A"
    with pytest.raises(DecryptionError):
        rotated.open_token(USER, "refresh_token", moved)
    with pytest.raises(KeyNotFoundError):
        sealer.open_token(USER, "access_token", moved)  # the old ring lacks the new key
