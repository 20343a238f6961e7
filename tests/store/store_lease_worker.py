"""A separate process racing for a refresh lease (run by test_store_leases.py).

argv: database URL, connection id, lease owner. Prints "ready" once connected, waits for a
line on stdin (the starting gun), tries the lease once, prints "won" or "lost".
"""

from __future__ import annotations

import sys

from pdauth.store import Store


def main(url: str, connection_id: str, lease_owner: str) -> None:
    store = Store(url)
    try:
        store.get_connection(connection_id)  # open the pooled connection before the race
        print("ready", flush=True)
        sys.stdin.readline()
        row = store.try_acquire_lease(connection_id, lease_owner, 1_800_000_000.0, 60.0)
        print("won" if row is not None else "lost", flush=True)
    finally:
        store.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:4])
