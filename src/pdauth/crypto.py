"""The key ring: the only module that touches key material.

Tokens are sealed with AES-256-GCM (``cryptography``'s ``AESGCM``, never hand-rolled) under a
random 96-bit nonce, and bound by associated data to the row and column they belong to, so a
ciphertext copied to another row or column fails to open (docs/SECURITY.md item 31, RFC 9700
§4.14.1). Each ciphertext is self-describing ASCII text, ``v1.<key id>.<base64url(nonce ‖
ciphertext ‖ tag)>``, and the version and key id are part of the authenticated data, so editing
either is detected. A :class:`KeyRing` holds several keys: the first encrypts, all decrypt, and
:meth:`KeyRing.reencrypt` moves old ciphertexts to the newest key (docs/SECURITY.md item 32).
It fails closed: a missing key is :class:`~pdauth.errors.KeyNotFoundError`, anything else that
does not verify is :class:`~pdauth.errors.DecryptionError`, and there is no plaintext fallback.
No message, repr or exception raised here contains key material or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pdauth.clock import Clock, SystemClock
from pdauth.errors import ConfigurationError, DecryptionError, KeyNotFoundError

__all__ = [
    "EncryptionKey",
    "KeyRing",
    "bind",
    "format_key",
    "generate_key",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
VERSION = "v1"
ENV_VAR = "PDAUTH_ENCRYPTION_KEYS"

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# Domain label in the authenticated data: a ciphertext made by some other tool with the same
# key can never be mistaken for one of ours.
_AAD_LABEL = b"pdauth.crypto"


@dataclass(frozen=True)
class EncryptionKey:
    """One AES-256 key and the id that names it in every ciphertext it seals."""

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or _KEY_ID.fullmatch(self.key_id) is None:
            raise ValueError("a key id must be 1-32 characters from A-Z a-z 0-9 _ -")
        # bytes only: a bytearray could be changed behind the frozen dataclass's back.
        if not isinstance(self.material, bytes) or len(self.material) != KEY_BYTES:
            raise ValueError(f"key {self.key_id!r}: key material must be exactly 32 bytes")


class KeyRing:
    """Several keys for rotation: ``keys[0]`` (the primary) encrypts, every key decrypts."""

    __slots__ = ("_aeads", "_keys")

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        keys = tuple(keys)
        if not keys:
            raise ValueError("a key ring needs at least one key")
        for key in keys:
            if not isinstance(key, EncryptionKey):
                raise TypeError("a key ring holds EncryptionKey values")
        ids = [key.key_id for key in keys]
        if len(set(ids)) != len(ids):
            raise ValueError("key ids in a key ring must be unique")
        self._keys = keys
        self._aeads = {key.key_id: AESGCM(key.material) for key in keys}

    @classmethod
    def from_config(cls, value: str) -> KeyRing:
        """Parse ``"kid1:<base64url 32 bytes>,kid2:<…>"`` (the PDAUTH_ENCRYPTION_KEYS format).

        The first entry is the primary key. Blank entries (a trailing comma) are ignored.
        Errors are :class:`~pdauth.errors.ConfigurationError` naming the variable and the
        entry's position, never the value.
        """
        if not isinstance(value, str):
            raise ConfigurationError(f"{ENV_VAR} must be text")
        entries = [entry.strip() for entry in value.split(",")]
        keys: list[EncryptionKey] = []
        for position, entry in enumerate(entries, start=1):
            if entry:
                keys.append(_parse_entry(position, entry))
        if not keys:
            raise ConfigurationError(
                f"{ENV_VAR} is empty: it needs at least one key "
                "(generate one with `pdauth keys generate`)"
            )
        seen: set[str] = set()
        for key in keys:
            if key.key_id in seen:
                raise ConfigurationError(f"{ENV_VAR} names key id {key.key_id!r} more than once")
            seen.add(key.key_id)
        return cls(keys)

    @property
    def primary_key_id(self) -> str:
        """The id of the key that encrypts."""
        return self._keys[0].key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, primary first."""
        return tuple(key.key_id for key in self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(primary_key_id={self.primary_key_id!r}, key_ids={self.key_ids!r})"

    def encrypt(self, plaintext: str | bytes, associated_data: bytes) -> str:
        """Seal ``plaintext`` under the primary key, bound to ``associated_data``.

        ``associated_data`` must be non-empty: use :func:`bind`, e.g.
        ``bind(connection_id, "access_token")``. A str plaintext is encoded as UTF-8.
        """
        _check_associated_data(associated_data)
        if isinstance(plaintext, str):
            data = plaintext.encode("utf-8")
        elif isinstance(plaintext, bytes):
            data = plaintext
        else:
            raise TypeError("plaintext must be str or bytes")
        key_id = self.primary_key_id
        # A fresh random nonce per message: with 96 random bits, a repeat is negligible for far
        # more messages than one key will ever seal (NIST SP 800-38D §8.3).
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[key_id].encrypt(nonce, data, _aad(key_id, associated_data))
        return f"{VERSION}.{key_id}.{_b64encode(nonce + sealed)}"

    def decrypt(self, ciphertext: str, associated_data: bytes) -> bytes:
        """Open a ciphertext made by :meth:`encrypt` with the same associated data."""
        _check_associated_data(associated_data)
        key_id, payload = _parse(ciphertext)
        aead = self._aeads.get(key_id)
        if aead is None:
            raise KeyNotFoundError(
                f"the ciphertext was sealed under key {key_id!r}, which is not in the key ring "
                f"(is it missing from {ENV_VAR}?)"
            )
        nonce, sealed = payload[:NONCE_BYTES], payload[NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, sealed, _aad(key_id, associated_data))
        except InvalidTag:
            # No chaining: the cause adds nothing and nothing else should ride along.
            raise DecryptionError(
                "the ciphertext does not verify: it was tampered with, or it belongs to "
                "another row or column"
            ) from None

    def decrypt_text(self, ciphertext: str, associated_data: bytes) -> str:
        """:meth:`decrypt`, then decode the plaintext as UTF-8."""
        data = self.decrypt(ciphertext, associated_data)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("the decrypted value is not UTF-8 text") from None

    def key_id_of(self, ciphertext: str) -> str:
        """The key id a ciphertext names (checks its shape; does not decrypt)."""
        key_id, _ = _parse(ciphertext)
        return key_id

    def needs_reencryption(self, ciphertext: str) -> bool:
        """Whether a ciphertext was sealed under a key other than the primary."""
        return self.key_id_of(ciphertext) != self.primary_key_id

    def reencrypt(self, ciphertext: str, associated_data: bytes) -> str:
        """Open a ciphertext and seal it again under the primary key (same associated data)."""
        return self.encrypt(self.decrypt(ciphertext, associated_data), associated_data)

    def with_key(self, key: EncryptionKey) -> KeyRing:
        """A new ring with ``key`` as primary and every other key kept for decryption.

        Passing a key that is already in the ring (same id and material) promotes it; the same
        id with other material is refused.
        """
        others = []
        for existing in self._keys:
            if existing.key_id != key.key_id:
                others.append(existing)
            elif not secrets.compare_digest(existing.material, key.material):
                raise ValueError(
                    f"key id {key.key_id!r} is already in the key ring with other material"
                )
        return KeyRing([key, *others])


def generate_key(key_id: str | None = None, *, clock: Clock | None = None) -> EncryptionKey:
    """A new random 256-bit key.

    Without ``key_id`` the id is the UTC date plus random hex, e.g. ``k20261127-3f9a1c``, so
    ids sort roughly by age and two keys made the same day still differ.
    """
    if key_id is None:
        now = (clock or SystemClock()).now()
        day = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d")
        key_id = f"k{day}-{secrets.token_hex(3)}"
    return EncryptionKey(key_id=key_id, material=secrets.token_bytes(KEY_BYTES))


def format_key(key: EncryptionKey) -> str:
    """``"<key id>:<base64url material>"``, one entry of PDAUTH_ENCRYPTION_KEYS."""
    return f"{key.key_id}:{_b64encode(key.material)}"


def bind(*parts: str) -> bytes:
    """Associated data that names what a ciphertext belongs to, e.g. a row id and a column.

    Each part is UTF-8 with a 4-byte length prefix, so ``bind("a", "bc")`` and
    ``bind("ab", "c")`` differ.
    """
    if not parts:
        raise ValueError("bind() needs at least one part")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError("bind() parts must be str")
    return _frame(*(part.encode("utf-8") for part in parts))


def _frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


def _aad(key_id: str, associated_data: bytes) -> bytes:
    return _frame(_AAD_LABEL, VERSION.encode("ascii"), key_id.encode("ascii"), associated_data)


def _check_associated_data(associated_data: bytes) -> None:
    if not isinstance(associated_data, bytes):
        raise TypeError("associated_data must be bytes (use pdauth.crypto.bind)")
    if not associated_data:
        # Unbound ciphertexts could be moved between rows and columns unnoticed.
        raise ValueError(
            "associated_data must not be empty: bind the value to its row and column, "
            'e.g. bind(connection_id, "access_token")'
        )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict unpadded base64url: the alphabet only, and the canonical spelling only."""
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - the checks above exclude these
        return None
    # Non-zero spare bits decode to the same bytes; refusing them keeps one spelling per value.
    if _b64encode(data) != text:
        return None
    return data


def _parse(ciphertext: str) -> tuple[str, bytes]:
    """Split ``v1.<key id>.<payload>``; any other shape is a DecryptionError (names nothing)."""
    if not isinstance(ciphertext, str):
        raise DecryptionError("a ciphertext must be text")
    parts = ciphertext.split(".")
    if len(parts) != 3:
        raise DecryptionError("not a pdauth ciphertext (expected v1.<key id>.<payload>)")
    version, key_id, encoded = parts
    if version != VERSION:
        raise DecryptionError("unsupported ciphertext version (this key ring reads v1)")
    if _KEY_ID.fullmatch(key_id) is None:
        raise DecryptionError("the ciphertext's key id is malformed")
    payload = _b64decode(encoded)
    if payload is None:
        raise DecryptionError("the ciphertext's payload is not base64url")
    if len(payload) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("the ciphertext is truncated")
    return key_id, payload


def _parse_entry(position: int, entry: str) -> EncryptionKey:
    where = f"{ENV_VAR} entry {position}"
    key_id, sep, encoded = entry.partition(":")
    key_id, encoded = key_id.strip(), encoded.strip()
    if not sep:
        raise ConfigurationError(f"{where} is not of the form <key id>:<base64url key>")
    # Only a well-formed id is echoed: a malformed "id" could be key material typed in the
    # wrong place (32 bytes of base64url is 43 characters, never a valid id).
    if _KEY_ID.fullmatch(key_id) is None:
        raise ConfigurationError(
            f"{where} has a malformed key id (1-32 characters from A-Z a-z 0-9 _ -)"
        )
    where = f"{where} (key id {key_id!r})"
    material = _b64decode(encoded.rstrip("="))
    if material is None:
        raise ConfigurationError(f"{where}: the key is not valid base64url")
    if len(material) != KEY_BYTES:
        raise ConfigurationError(f"{where}: the key must decode to exactly 32 bytes")
    return EncryptionKey(key_id=key_id, material=material)
