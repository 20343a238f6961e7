"""The public surface is a contract: `pdauth.__all__` is exactly the intended names."""

from __future__ import annotations

import pdauth
from pdauth import errors

INTENDED = {
    "Connection",
    "Connector",
    "PagerDutyClient",
    "PdauthError",
    "Settings",
    "SyncConnector",
    "SyncPagerDutyClient",
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


def test_public_names_resolve_to_their_home_modules() -> None:
    from pdauth.client import PagerDutyClient, SyncPagerDutyClient
    from pdauth.config import Settings
    from pdauth.connections import Connection, Connector
    from pdauth.sync_connector import SyncConnector

    assert pdauth.Connector is Connector
    assert pdauth.Connection is Connection
    assert pdauth.Settings is Settings
    assert pdauth.PagerDutyClient is PagerDutyClient
    assert pdauth.SyncPagerDutyClient is SyncPagerDutyClient
    assert pdauth.SyncConnector is SyncConnector


def test_importing_the_pure_core_does_not_load_io_layers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pdauth.oauth, pdauth.crypto; "
        "bad = [m for m in ('httpx', 'sqlalchemy', 'starlette', 'pdauth.connections') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unknown_attribute_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError):
        _ = pdauth.NoSuchThing
