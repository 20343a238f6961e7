"""Tests for pdauth.oauth (a package so its module names cannot clash with other test folders)."""
