"""Several instances that behave as one: three ``pdauth serve`` processes, PostgreSQL, Redis.

Each test picks which instance a request reaches, as a load balancer without sticky sessions
would: a flow begun on one instance finishes on another; concurrent token requests spread
over all three refresh once; killing the instance that holds the refresh lease while its
refresh is in flight loses nothing; three keepers deliver each event once; three processes
pacing one connection through Redis never meet a 429.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.multi.conftest import ACCESS_TTL, REDIS_URL, Cluster

pytestmark = [pytest.mark.multi, pytest.mark.postgres, pytest.mark.slow]

WORKER = Path(__file__).with_name("pace_worker.py")
OUTPUT = Path("test-output")


def _vend(cluster: Cluster, instance: int, connection_id: str) -> httpx.Response:
    with cluster.api(instance) as api:
        return api.post(f"/api/v1/connections/{connection_id}/access-token")


def _wait_for_expiry() -> None:
    # Real processes read the real clock: the only way to an expired token is to wait for it.
    # Past the refresh point (REFRESH_AT) an instance may still hand out the old token while it
    # is valid and another instance refreshes; past expiry every caller needs the new one.
    time.sleep(ACCESS_TTL + 0.5)


def _connection(cluster: Cluster, instance: int, connection_id: str) -> dict[str, Any]:
    with cluster.api(instance) as api:
        answer = api.get(f"/api/v1/connections/{connection_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["connection"])


def _events(cluster: Cluster) -> list[dict[str, Any]]:
    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                sa.text(
                    "SELECT id, type, connection_id, delivered_at, next_attempt_at "
                    "FROM events ORDER BY id"
                )
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def test_a_flow_begun_on_one_instance_finishes_on_another_and_shows_on_the_third(
    cluster: Cluster,
) -> None:
    connection_id = cluster.connect("flow-owner", via=(0, 1, 2))
    for instance in range(3):
        seen = _connection(cluster, instance, connection_id)
        assert seen["status"] == "active"
        assert seen["owner"] == "flow-owner"


def test_concurrent_token_requests_over_three_instances_after_expiry_refresh_once(
    cluster: Cluster,
) -> None:
    connection_id = cluster.connect("vend-owner")
    _wait_for_expiry()
    before = cluster.stats()
    refreshes = cluster.refreshes()

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda i: _vend(cluster, i % 3, connection_id), range(30)))

    assert [a.status_code for a in answers] == [200] * 30
    assert len({a.json()["access_token"] for a in answers}) == 1
    assert cluster.refreshes() - refreshes == 1
    assert cluster.stats()["refresh_reuse_detections"] == before["refresh_reuse_detections"]


def test_killing_the_lease_holder_mid_refresh_loses_nothing(cluster: Cluster) -> None:
    """SIGKILL lands while instance 0 holds the lease and PagerDuty is slow to answer.

    The emulator's ``timeout`` fault holds the refresh request for 20 s and then answers 504
    *without* processing it, so the refresh token was never rotated: once the dead instance's
    lease expires, another instance refreshes with the same refresh token and the connection
    stays active — no reuse, no needs_reauth. (A kill *after* PagerDuty rotated the token is the
    other case; tests/evidence shows it ends needs_reauth exactly once with one event.)
    """
    connection_id = cluster.connect("kill-owner")
    _wait_for_expiry()
    refreshes = cluster.refreshes()
    reuse = cluster.stats()["refresh_reuse_detections"]
    fault = httpx.post(
        cluster.emulator.url + "/_emulator/faults",
        json={"target": "token", "kind": "timeout", "delay": 20, "count": 1},
    )
    assert fault.status_code == 200, fault.text

    doomed: list[BaseException | httpx.Response] = []

    def vend_on_doomed_instance() -> None:
        try:
            doomed.append(_vend(cluster, 0, connection_id))
        except httpx.HTTPError as exc:
            doomed.append(exc)

    thread = threading.Thread(target=vend_on_doomed_instance, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while cluster.stats()["faults_pending"]["token"]:  # the refresh reached PagerDuty: leased
        assert time.monotonic() < deadline, "instance 0 never sent its refresh"
        time.sleep(0.02)
    cluster.instances[0].kill()
    thread.join(timeout=30)
    assert doomed
    assert not isinstance(doomed[0], httpx.Response)

    taken_over = _vend(cluster, 1, connection_id)
    assert taken_over.status_code == 200, taken_over.text
    assert _connection(cluster, 2, connection_id)["status"] == "active"
    assert cluster.refreshes() - refreshes == 1
    assert cluster.stats()["refresh_reuse_detections"] == reuse
    types = [e["type"] for e in _events(cluster) if e["connection_id"] == connection_id]
    assert not [t for t in types if "reauth" in t]

    cluster.start(0)  # back to three instances for the tests after this one
    assert _vend(cluster, 0, connection_id).status_code == 200


def test_three_keepers_deliver_each_event_once(cluster: Cluster) -> None:
    for n in range(3):
        cluster.connect(f"keeper-owner-{n}", via=(n % 3, (n + 1) % 3, (n + 2) % 3))
    deadline = time.monotonic() + 90
    # Outbox events wait with a next attempt time; audit-only ones (a refresh) have none.
    while pending := [
        e for e in _events(cluster) if e["delivered_at"] is None and e["next_attempt_at"]
    ]:
        assert time.monotonic() < deadline, f"the keepers did not deliver: {pending}"
        time.sleep(0.2)
    # Every outbox event is marked delivered: no keeper claims it again, so the count is final.
    delivered = [e["id"] for e in _events(cluster) if e["delivered_at"] is not None]
    assert delivered
    assert sorted(cluster.received) == sorted(delivered)  # each once, none missing


def _pace(cluster: Cluster, connection_id: str, env: dict[str, str]) -> dict[str, Any]:
    """Three worker processes x 8 tasks x 6 calls on one connection, started together."""
    rate_limited = cluster.stats()["rate_limited"]["total"]
    start_at = time.time() + 4.0  # every process imports and opens its Connector first
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), connection_id, "8", "6", repr(start_at)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "calls": sum(r["ok"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
        "longest_call_s": max(r["longest"] for r in results),
        "rate_limited": cluster.stats()["rate_limited"]["total"] - rate_limited,
    }


def test_three_processes_pacing_one_connection_through_redis_never_meet_a_429(
    cluster: Cluster,
) -> None:
    redis = pytest.importorskip("redis")
    shared = _pace(cluster, cluster.connect("pace-shared"), cluster.env)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        pace_keys = list(client.scan_iter("pdauth:*"))
    finally:
        client.close()

    alone_env = {k: v for k, v in cluster.env.items() if k != "PDAUTH_REDIS_URL"}
    alone = _pace(cluster, cluster.connect("pace-alone"), alone_env)

    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "multi-pacing.json").write_text(
        json.dumps({"with_redis": shared, "without_redis": alone}, indent=2)
    )
    print(f"\npacing 3 processes x 8 tasks: with Redis {shared}; without Redis {alone}")
    assert pace_keys, "nothing was written to Redis: pacing was not shared"
    assert shared["errors"] == []
    assert shared["calls"] == 3 * 8 * 6
    assert shared["rate_limited"] == 0
    assert alone["errors"] == []
    assert alone["calls"] == 3 * 8 * 6
