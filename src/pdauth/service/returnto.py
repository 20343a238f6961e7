"""Kept only for ``connect_sessions.py``'s import: the one ``return_to`` rule is
:mod:`pdauth.returnto`. Import from there; this module goes once nothing imports it."""

from __future__ import annotations

from pdauth.returnto import MAX_RETURN_TO_LENGTH, safe_return_to

__all__ = ["MAX_RETURN_TO_LENGTH", "safe_return_to"]
