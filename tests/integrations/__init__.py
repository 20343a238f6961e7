"""Tests of pdauth inside host frameworks (Starlette/FastAPI, Django, Flask)."""
