"""The PagerDuty proxy for non-Python backends (filled in below)."""

from __future__ import annotations

from starlette.routing import Route

__all__ = ["ROUTES"]

ROUTES: list[Route] = []
