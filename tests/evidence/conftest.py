"""Marks every test under tests/evidence as ``evidence``, so ``make check`` can leave them out.

The fault-injection, fuzzing and load tests are the slow, heavy part of the suite; ``make test``
runs them all, the fast lane does not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.evidence)
