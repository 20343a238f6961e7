"""PKCE, RFC 7636: the code verifier (§4.1) and its S256 code challenge (§4.2).

The verifier is a per-flow secret: it goes to the token endpoint only, never into a URL,
a log line or an exception message. Only ``S256`` exists here; ``plain`` (§4.2) offers no
protection against an intercepted authorization request and PagerDuty does not document it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = ["generate_code_verifier", "s256_challenge", "validate_code_verifier"]

# RFC 7636 §4.1: code-verifier = 43*128unreserved (ALPHA / DIGIT / "-" / "." / "_" / "~").
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# 32..96 random bytes are exactly the sizes whose unpadded base64url is 43..128 characters.
_MIN_BYTES = 32
_MAX_BYTES = 96


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_code_verifier(nbytes: int = 32) -> str:
    """A fresh verifier: ``nbytes`` (32..96) CSPRNG bytes, base64url without padding.

    32 bytes (43 characters, 256 bits) is what RFC 7636 §7.1 recommends.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError("nbytes must be an int")
    if not _MIN_BYTES <= nbytes <= _MAX_BYTES:
        raise ValueError(f"nbytes must be between {_MIN_BYTES} and {_MAX_BYTES}")
    return _b64url(secrets.token_bytes(nbytes))


def validate_code_verifier(verifier: str) -> str:
    """Return ``verifier`` if it is 43..128 characters of RFC 7636's unreserved set.

    Raises ValueError otherwise; the message never contains the verifier.
    """
    if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
        raise ValueError("code verifier must be 43-128 characters of [A-Za-z0-9-._~]")
    return verifier


def s256_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(verifier)))`` without padding (RFC 7636 §4.2)."""
    validate_code_verifier(verifier)
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
