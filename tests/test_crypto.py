"""The key ring: AES-256-GCM round trips, tamper detection, binding, rotation, key parsing."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings, strategies as st

from pdauth.clock import FrozenClock
from pdauth.crypto import EncryptionKey, KeyRing, bind, format_key, generate_key
from pdauth.errors import ConfigurationError, CryptoError, DecryptionError, KeyNotFoundError

MATERIAL_1 = bytes(range(32))
MATERIAL_2 = bytes(range(100, 132))
MATERIAL_3 = bytes(range(200, 232))
K1 = EncryptionKey("k1", MATERIAL_1)
K2 = EncryptionKey("k2", MATERIAL_2)
K3 = EncryptionKey("k3", MATERIAL_3)
AD = bind("conn-1", "access_token")
CIPHERTEXT_SHAPE = re.compile(r"v1\.[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]+")

# Sealed once with key "kat-2026" = bytes(range(32)) and a fixed nonce: stored rows must stay
# readable by every later version of this module.
KAT_KEY = EncryptionKey("kat-2026", bytes(range(32)))
KAT_CIPHERTEXT = "v1.kat-2026.ZGVmZ2hpamtsbW5vOH-rFVK2PfBRFTHFuwsZiiewXYw_yvsnAJxqcPaR_vi65g"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def split(ciphertext: str) -> tuple[str, str, bytes]:
    version, key_id, encoded = ciphertext.split(".")
    return version, key_id, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def join(version: str, key_id: str, payload: bytes) -> str:
    return f"{version}.{key_id}.{b64url(payload)}"


def material_spellings(material: bytes) -> list[str]:
    """Every way key material could leak into text."""
    return [
        repr(material),
        material.hex(),
        b64url(material),
        base64.b64encode(material).decode("ascii"),
    ]


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    ["pdus+_0XBPWQQ_access", "", "ünïcødé ✓ 令牌 🔑", "x" * 10_000],
)
def test_text_round_trips(plaintext: str) -> None:
    ring = KeyRing([K1])
    ciphertext = ring.encrypt(plaintext, AD)
    assert ring.decrypt_text(ciphertext, AD) == plaintext
    assert ring.decrypt(ciphertext, AD) == plaintext.encode("utf-8")


@pytest.mark.parametrize("plaintext", [b"", b"\x00\xff\x80 binary", bytes(range(256))])
def test_bytes_round_trip(plaintext: bytes) -> None:
    ring = KeyRing([K1])
    assert ring.decrypt(ring.encrypt(plaintext, AD), AD) == plaintext


def test_ciphertext_is_ascii_text_naming_version_and_key() -> None:
    ciphertext = KeyRing([K1, K2]).encrypt("secret", AD)
    assert CIPHERTEXT_SHAPE.fullmatch(ciphertext)
    assert ciphertext.startswith("v1.k1.")
    assert ciphertext.isascii()
    assert "secret" not in ciphertext


def test_known_answer_ciphertext_still_decrypts() -> None:
    ring = KeyRing([KAT_KEY])
    assert ring.decrypt_text(KAT_CIPHERTEXT, bind("conn-1", "access_token")) == (
        "pdus+_known-answer"
    )


def test_same_plaintext_encrypts_differently_each_time() -> None:
    ring = KeyRing([K1])
    assert ring.encrypt("same", AD) != ring.encrypt("same", AD)


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=512), associated_data=st.binary(min_size=1, max_size=128))
def test_round_trip_for_any_plaintext_and_associated_data(
    plaintext: bytes, associated_data: bytes
) -> None:
    ring = KeyRing([K1, K2])
    assert ring.decrypt(ring.encrypt(plaintext, associated_data), associated_data) == plaintext


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=200))
def test_round_trip_for_any_text(text: str) -> None:
    ring = KeyRing([K1])
    assert ring.decrypt_text(ring.encrypt(text, AD), AD) == text


# -- tampering and binding -----------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(plaintext=st.binary(max_size=64), data=st.data())
def test_any_single_bit_flip_in_the_payload_is_detected(
    plaintext: bytes, data: st.DataObject
) -> None:
    ring = KeyRing([K1])
    version, key_id, payload = split(ring.encrypt(plaintext, AD))
    bit = data.draw(st.integers(min_value=0, max_value=len(payload) * 8 - 1), label="bit")
    tampered = bytearray(payload)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        ring.decrypt(join(version, key_id, bytes(tampered)), AD)


@settings(max_examples=60, deadline=None)
@given(
    ad_1=st.binary(min_size=1, max_size=64),
    ad_2=st.binary(min_size=1, max_size=64),
)
def test_other_associated_data_is_refused(ad_1: bytes, ad_2: bytes) -> None:
    if ad_1 == ad_2:
        ad_2 += b"!"
    ring = KeyRing([K1])
    with pytest.raises(DecryptionError):
        ring.decrypt(ring.encrypt("token", ad_1), ad_2)


def test_ciphertexts_do_not_move_between_rows_or_columns() -> None:
    ring = KeyRing([K1])
    access = ring.encrypt("token", bind("conn-1", "access_token"))
    for other in (bind("conn-2", "access_token"), bind("conn-1", "refresh_token")):
        with pytest.raises(DecryptionError):
            ring.decrypt(access, other)


def test_swapped_key_id_in_the_text_is_refused() -> None:
    ring = KeyRing([K1, K2])
    _, _, payload = split(ring.encrypt("token", AD))
    with pytest.raises(DecryptionError):
        ring.decrypt(join("v1", "k2", payload), AD)
    with pytest.raises(KeyNotFoundError):
        ring.decrypt(join("v1", "k9", payload), AD)


def test_key_id_is_authenticated_even_when_two_ids_share_material() -> None:
    ring = KeyRing([EncryptionKey("a", MATERIAL_1), EncryptionKey("b", MATERIAL_1)])
    _, _, payload = split(ring.encrypt("token", AD))
    with pytest.raises(DecryptionError):
        ring.decrypt(join("v1", "b", payload), AD)


def test_version_and_key_id_are_authenticated_not_just_the_callers_data() -> None:
    # Sealed with the caller's associated data alone: our ring must not accept it.
    nonce = bytes(12)
    sealed = AESGCM(MATERIAL_1).encrypt(nonce, b"token", AD)
    with pytest.raises(DecryptionError):
        KeyRing([K1]).decrypt(join("v1", "k1", nonce + sealed), AD)


def test_every_truncation_is_refused() -> None:
    ring = KeyRing([K1])
    ciphertext = ring.encrypt("token", AD)
    for end in range(len(ciphertext)):
        with pytest.raises(DecryptionError):
            ring.decrypt(ciphertext[:end], AD)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "plaintext-token",
        "v1",
        "v1.k1",
        "v1.k1.",
        "v1..AAAA",
        "v1.k1.AAAA.AAAA",
        "v1.bad id.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1." + "k" * 33 + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.k1.@@@@",
        "v1.k1.AAAAA",
        "v1.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "v1.k1.AAAAAAAAAAAAAAAAAAAAAAAA+AAAAAAAAAAAAAAAA",
        "v1.k1.ÄAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.k1." + "A" * 36,
    ],
)
def test_garbage_is_a_decryption_error(garbage: str) -> None:
    ring = KeyRing([K1])
    with pytest.raises(DecryptionError):
        ring.decrypt(garbage, AD)
    with pytest.raises(DecryptionError):
        ring.key_id_of(garbage)


@pytest.mark.parametrize("version", ["v0", "v2", "V1", "1", ""])
def test_other_versions_are_refused(version: str) -> None:
    ring = KeyRing([K1])
    _, key_id, payload = split(ring.encrypt("token", AD))
    with pytest.raises(DecryptionError):
        ring.decrypt(join(version, key_id, payload), AD)


def test_non_canonical_base64_is_refused() -> None:
    ring = KeyRing([K1])
    ciphertext = ring.encrypt("x", AD)  # 29 payload bytes: the last character has spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(ciphertext[-1])
    sloppy = ciphertext[:-1] + alphabet[last ^ 1]
    assert split(sloppy) == split(ciphertext)  # a lenient decoder would accept it
    with pytest.raises(DecryptionError):
        ring.decrypt(sloppy, AD)


def test_non_text_ciphertext_is_a_decryption_error() -> None:
    ring = KeyRing([K1])
    ciphertext = ring.encrypt("token", AD)
    for wrong in (ciphertext.encode("ascii"), None, 42):
        with pytest.raises(DecryptionError):
            ring.decrypt(wrong, AD)  # type: ignore[arg-type]


def test_unknown_key_id_is_key_not_found() -> None:
    ciphertext = KeyRing([K3]).encrypt("token", AD)
    ring = KeyRing([K1, K2])
    with pytest.raises(KeyNotFoundError, match="k3"):
        ring.decrypt(ciphertext, AD)
    assert ring.key_id_of(ciphertext) == "k3"


def test_decrypted_bytes_that_are_not_utf8_are_refused_as_text() -> None:
    ring = KeyRing([K1])
    ciphertext = ring.encrypt(b"\xff\xfe", AD)
    with pytest.raises(DecryptionError):
        ring.decrypt_text(ciphertext, AD)


def test_empty_associated_data_is_refused() -> None:
    ring = KeyRing([K1])
    with pytest.raises(ValueError, match="associated_data"):
        ring.encrypt("token", b"")
    ciphertext = ring.encrypt("token", AD)
    with pytest.raises(ValueError, match="associated_data"):
        ring.decrypt(ciphertext, b"")


def test_wrong_argument_types_are_refused() -> None:
    ring = KeyRing([K1])
    with pytest.raises(TypeError):
        ring.encrypt("token", "conn-1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ring.encrypt(42, AD)  # type: ignore[arg-type]


def test_crypto_errors_share_a_root() -> None:
    assert issubclass(DecryptionError, CryptoError)
    assert issubclass(KeyNotFoundError, CryptoError)


# -- nonces --------------------------------------------------------------------------------


def test_ten_thousand_encryptions_never_repeat_a_nonce() -> None:
    ring = KeyRing([K1])
    nonces = {split(ring.encrypt("token", AD))[2][:12] for _ in range(10_000)}
    assert len(nonces) == 10_000


# -- rotation ------------------------------------------------------------------------------


def test_rotation_keeps_old_ciphertexts_readable_and_moves_them() -> None:
    old_ring = KeyRing([K1])
    old = old_ring.encrypt("token", AD)

    ring = old_ring.with_key(K2)
    assert ring.primary_key_id == "k2"
    assert ring.key_ids == ("k2", "k1")
    assert old_ring.key_ids == ("k1",)  # with_key returns a new ring
    assert ring.decrypt_text(old, AD) == "token"

    new = ring.encrypt("token", AD)
    assert ring.key_id_of(new) == "k2"
    assert ring.needs_reencryption(old)
    assert not ring.needs_reencryption(new)

    moved = ring.reencrypt(old, AD)
    assert ring.key_id_of(moved) == "k2"
    assert not ring.needs_reencryption(moved)
    # Once everything is moved the old key can go.
    assert KeyRing([K2]).decrypt_text(moved, AD) == "token"
    with pytest.raises(KeyNotFoundError):
        KeyRing([K2]).decrypt(old, AD)


def test_reencrypt_keeps_the_binding() -> None:
    ring = KeyRing([K2, K1])
    old = KeyRing([K1]).encrypt("token", AD)
    with pytest.raises(DecryptionError):
        ring.reencrypt(old, bind("conn-2", "access_token"))
    moved = ring.reencrypt(old, AD)
    with pytest.raises(DecryptionError):
        ring.decrypt(moved, bind("conn-2", "access_token"))


def test_with_key_promotes_a_key_already_in_the_ring() -> None:
    ring = KeyRing([K1, K2]).with_key(EncryptionKey("k2", MATERIAL_2))
    assert ring.key_ids == ("k2", "k1")


def test_with_key_refuses_an_existing_id_with_other_material() -> None:
    with pytest.raises(ValueError, match="k1"):
        KeyRing([K1]).with_key(EncryptionKey("k1", MATERIAL_2))


# -- keys and rings ------------------------------------------------------------------------


@pytest.mark.parametrize("key_id", ["", "k" * 33, "has.dot", "has space", "kéy", "a:b"])
def test_malformed_key_ids_are_refused(key_id: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        EncryptionKey(key_id, MATERIAL_1)


@pytest.mark.parametrize("material", [b"", bytes(16), bytes(31), bytes(33), bytearray(32)])
def test_key_material_must_be_exactly_32_bytes(material: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EncryptionKey("k1", material)


def test_a_ring_needs_keys_with_unique_ids() -> None:
    with pytest.raises(ValueError, match="at least one"):
        KeyRing([])
    with pytest.raises(ValueError, match="unique"):
        KeyRing([K1, EncryptionKey("k1", MATERIAL_2)])
    with pytest.raises(TypeError):
        KeyRing([K1, "k2:material"])  # type: ignore[list-item]


def test_repr_never_shows_key_material() -> None:
    ring = KeyRing([K1, K2])
    texts = [repr(K1), str(K1), repr(ring), str(ring), repr([K1, K2])]
    for text in texts:
        for material in (MATERIAL_1, MATERIAL_2):
            for spelling in material_spellings(material):
                assert spelling not in text
    assert "k1" in repr(K1)
    assert repr(ring) == "KeyRing(primary_key_id='k1', key_ids=('k1', 'k2'))"


def test_generate_key_is_random_with_a_dated_default_id() -> None:
    clock = FrozenClock(1_800_000_000.0)  # 2027-01-15 UTC
    first, second = generate_key(clock=clock), generate_key(clock=clock)
    assert first.material != second.material
    assert first.key_id != second.key_id
    assert re.fullmatch(r"k20270115-[0-9a-f]{6}", first.key_id)
    assert len(first.material) == 32
    assert re.fullmatch(r"k\d{8}-[0-9a-f]{6}", generate_key().key_id)


def test_generate_key_with_an_id() -> None:
    assert generate_key("prod-2026").key_id == "prod-2026"
    with pytest.raises(ValueError, match="key id"):
        generate_key("not valid")


def test_format_key_round_trips_through_from_config() -> None:
    first, second = generate_key("new"), generate_key("old")
    value = f"{format_key(first)},{format_key(second)}"
    ring = KeyRing.from_config(value)
    assert ring.key_ids == ("new", "old")
    assert ring.decrypt(KeyRing([first]).encrypt("t", AD), AD) == b"t"
    assert ring.decrypt(KeyRing([second]).encrypt("t", AD), AD) == b"t"
    assert format_key(K1) == "k1:" + b64url(MATERIAL_1)


def test_from_config_tolerates_spaces_padding_and_a_trailing_comma() -> None:
    padded = base64.urlsafe_b64encode(MATERIAL_2).decode("ascii")
    ring = KeyRing.from_config(f"  k1 : {b64url(MATERIAL_1)} ,\n k2:{padded},")
    assert ring.key_ids == ("k1", "k2")
    assert ring.decrypt(KeyRing([K2]).encrypt("t", AD), AD) == b"t"


BAD_MATERIAL = "Zm9vYmFy!!notbase64+/butsecret"
STANDARD_B64 = base64.b64encode(bytes(range(250, 256)) * 6).decode("ascii")  # has + and /


@pytest.mark.parametrize(
    ("value", "secret_part"),
    [
        (f"k1:{BAD_MATERIAL}", BAD_MATERIAL),
        ("k1:" + b64url(bytes(range(16))), b64url(bytes(range(16)))),
        ("k1:" + b64url(bytes(range(33))), b64url(bytes(range(33)))),
        (f"k1:{STANDARD_B64}", STANDARD_B64),
        (f"k1:{b64url(MATERIAL_1)},k1:{b64url(MATERIAL_2)}", b64url(MATERIAL_2)),
        ("", None),
        ("  , ,", None),
        (b64url(MATERIAL_1), b64url(MATERIAL_1)),
        (f"{b64url(MATERIAL_1)}:k1", b64url(MATERIAL_1)),
        (f"bad id:{b64url(MATERIAL_1)}", b64url(MATERIAL_1)),
        (f":{b64url(MATERIAL_1)}", b64url(MATERIAL_1)),
        (f"k1:{b64url(MATERIAL_1)[:-1]}", b64url(MATERIAL_1)[:-1]),
    ],
)
def test_from_config_errors_name_the_variable_not_the_value(
    value: str, secret_part: str | None
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        KeyRing.from_config(value)
    message = str(caught.value)
    assert "PDAUTH_ENCRYPTION_KEYS" in message
    if secret_part is not None:
        assert secret_part not in message
    assert caught.value.__cause__ is None


def test_from_config_refuses_non_text() -> None:
    with pytest.raises(ConfigurationError, match="PDAUTH_ENCRYPTION_KEYS"):
        KeyRing.from_config(b"k1:abc")  # type: ignore[arg-type]


def test_from_config_names_a_duplicate_id() -> None:
    with pytest.raises(ConfigurationError, match="'k1' more than once"):
        KeyRing.from_config(f"k1:{b64url(MATERIAL_1)},k1:{b64url(MATERIAL_1)}")


# -- bind ----------------------------------------------------------------------------------


def test_bind_is_unambiguous() -> None:
    assert bind("a", "bc") != bind("ab", "c")
    assert bind("a|b") != bind("a", "b")
    assert bind("") != bind("", "")
    assert bind("conn-1", "access_token") == b"\x00\x00\x00\x06conn-1\x00\x00\x00\x0caccess_token"


@settings(max_examples=100, deadline=None)
@given(
    first=st.lists(st.text(max_size=8), min_size=1, max_size=4),
    second=st.lists(st.text(max_size=8), min_size=1, max_size=4),
)
def test_bind_is_injective(first: list[str], second: list[str]) -> None:
    assert (bind(*first) == bind(*second)) == (first == second)


def test_bind_refuses_nothing_and_non_text() -> None:
    with pytest.raises(ValueError, match="at least one"):
        bind()
    with pytest.raises(TypeError):
        bind("conn-1", b"access_token")  # type: ignore[arg-type]


def test_error_messages_never_contain_plaintext_or_material() -> None:
    ring = KeyRing([K1])
    plaintext = "pdus+_canary-plaintext-token"
    ciphertext = ring.encrypt(plaintext, AD)
    messages = []
    for wrong_ad in (bind("other"), bind("conn-1", "refresh_token")):
        with pytest.raises(DecryptionError) as caught:
            ring.decrypt(ciphertext, wrong_ad)
        messages.append(str(caught.value))
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__
    with pytest.raises(KeyNotFoundError) as missing:
        KeyRing([K2]).decrypt(ciphertext, AD)
    messages.append(str(missing.value))
    with pytest.raises(DecryptionError) as garbage:
        ring.decrypt(plaintext, AD)
    messages.append(str(garbage.value))
    for message in messages:
        assert plaintext not in message
        assert ciphertext.split(".")[2] not in message
        for spelling in material_spellings(MATERIAL_1):
            assert spelling not in message
