"""Alembic migrations of the pdauth database; run them with :func:`pdauth.store.upgrade`."""

from __future__ import annotations

__all__: list[str] = []
