"""Builders and a thread-race helper shared by the store tests."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pdauth.store import NewConnection, NewPending

T = TypeVar("T")

T0 = 1_800_000_000.0


def new_connection(**overrides: Any) -> NewConnection:
    values: dict[str, Any] = {
        "owner": "owner-1",
        "kind": "user",
        "region": "us",
        "account_id": "PACCT01",
        "subdomain": "acme",
        "pd_user_id": "PUSER01",
        "pd_user_name": "Ann Example",
        "pd_user_email": "ann@example.com",
        "scopes": "incidents.read users.read",
        "access_token_ct": "v1.k1.access-ciphertext-1",
        "refresh_token_ct": "v1.k1.refresh-ciphertext-1",
        "key_id": "k1",
        "access_expires_at": T0 + 3600,
        "refresh_expires_at": T0 + 30 * 86400,
    }
    values.update(overrides)
    return NewConnection(**values)


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def new_pending(state: str = "state-1", **overrides: Any) -> NewPending:
    values: dict[str, Any] = {
        "state_hash": state_hash(state),
        "owner": "owner-1",
        "binding_hash": "b" * 64,
        "verifier_ct": "v1.k1.verifier-ciphertext",
        "redirect_uri": "https://app.example/callback",
        "scopes": "incidents.read",
        "return_to": "/settings",
        "expires_at": T0 + 600,
    }
    values.update(overrides)
    return NewPending(**values)


def race(n: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..n-1) in n threads released together; results in index order."""
    barrier = threading.Barrier(n)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return work(index)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=60) for f in futures]
