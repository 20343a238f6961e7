"""Tests of pdauth.store on SQLite and PostgreSQL."""

from __future__ import annotations
