"""Helpers for the TokenManager/Connector tests: an in-process emulator harness and the
worker scripts that the multi-process tests run in separate OS processes."""
