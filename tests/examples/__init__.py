"""Tests that run the examples in other languages (examples/express)."""
