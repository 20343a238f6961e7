"""The public surface is a contract: `pdauth.__all__` is exactly the intended names."""

from __future__ import annotations

import pdauth
from pdauth import errors

INTENDED = {
    "PdauthError",
    "__version__",
}


def test_all_is_exactly_the_intended_public_names() -> None:
    assert set(pdauth.__all__) == INTENDED


def test_every_public_name_exists() -> None:
    for name in pdauth.__all__:
        assert hasattr(pdauth, name), name


def test_every_error_derives_from_the_root_and_ends_in_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.PdauthError), name
        assert name.endswith("Error"), name


def test_every_error_is_drawn_in_the_module_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in doc, name
