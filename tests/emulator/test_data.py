"""The seeded directory: deterministic per seed, realistic shapes, the fixed admins, look-ups."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from pdauth.emulator.data import Directory, build_directory

NOW = 1_800_000_000.0
PD_ID = re.compile(r"P[A-Z0-9]{6}")


@pytest.fixture(scope="module")
def directory() -> Directory:
    return build_directory(1, now=NOW)


def snapshot(d: Directory) -> tuple[object, ...]:
    return (
        list(d.accounts.values()),
        list(d.users.values()),
        list(d.teams.values()),
        list(d.services.values()),
        list(d.incidents.values()),
        list(d.audit_records.values()),
        [k.token for k in d.api_keys.values()],
    )


def test_same_seed_same_directory(directory: Directory) -> None:
    assert snapshot(build_directory(1, now=NOW)) == snapshot(directory)


def test_other_seed_other_directory(directory: Directory) -> None:
    other = build_directory(2, now=NOW)
    assert [u.id for u in other.users.values()] != [u.id for u in directory.users.values()]
    assert other.api_keys["PACME01"].token != directory.api_keys["PACME01"].token
    # The fixed names stay fixed whatever the seed.
    assert other.users_of("PACME01")[0].email == "admin@acme.example"


def test_accounts_and_sizes(directory: Directory) -> None:
    us = directory.account_by_subdomain("acme")
    eu = directory.account_by_subdomain("EuroCorp")
    assert us is not None
    assert eu is not None
    assert (us.id, us.region, eu.id, eu.region) == ("PACME01", "us", "PEURO01", "eu")
    assert directory.account_by_subdomain("nope") is None
    assert len(directory.users_of(us.id)) == 250
    assert len(directory.users_of(eu.id)) == 20
    assert len(directory.services_of(us.id)) == 15
    assert len(directory.incidents_of(us.id)) == 300
    assert len(directory.audit_records_of(us.id)) == 400
    small = build_directory(1, 7, now=NOW)
    assert len(small.users_of("PACME01")) == 7
    assert [u.id for u in small.users_of("PEURO01")] == [
        u.id for u in directory.users_of("PEURO01")
    ]


def test_first_users_are_admins(directory: Directory) -> None:
    us_admin = directory.users_of("PACME01")[0]
    eu_admin = directory.users_of("PEURO01")[0]
    assert (us_admin.email, us_admin.role) == ("admin@acme.example", "admin")
    assert (eu_admin.email, eu_admin.role) == ("admin@eurocorp.example", "admin")


def test_ids_and_emails_unique_and_well_formed(directory: Directory) -> None:
    ids = [
        *directory.users,
        *directory.teams,
        *directory.services,
        *directory.incidents,
        *directory.audit_records,
        *directory.escalation_policies,
        *(k.id for k in directory.api_keys.values()),
    ]
    assert len(ids) == len(set(ids))
    assert all(PD_ID.fullmatch(i) for i in ids)
    emails = [u.email for u in directory.users.values()]
    assert len(emails) == len({e.lower() for e in emails})
    assert all(re.fullmatch(r"[a-z0-9.]+@(acme|eurocorp)\.example", e) for e in emails)


def test_users_look_real(directory: Directory) -> None:
    users = directory.users_of("PACME01")
    roles = Counter(u.role for u in users)
    assert roles["owner"] == 1
    assert {"admin", "user", "limited_user", "observer"} <= set(roles)
    assert len({u.time_zone for u in users}) > 4
    assert len({u.color for u in users}) > 10
    assert any(u.job_title is None for u in users)
    assert any(u.job_title for u in users)
    assert all(" " in u.name for u in users)
    assert all(u.time_zone.startswith("Europe/") for u in directory.users_of("PEURO01"))


def test_incidents_spread_over_90_days(directory: Directory) -> None:
    incidents = directory.incidents_of("PACME01")
    assert all(NOW - 90 * 86400 <= i.created_at <= NOW for i in incidents)
    assert min(i.created_at for i in incidents) < NOW - 80 * 86400
    statuses = Counter(i.status for i in incidents)
    assert statuses["triggered"] > 0
    assert statuses["acknowledged"] > 0
    assert statuses["resolved"] > 200
    assert {i.urgency for i in incidents} == {"high", "low"}
    assert [i.incident_number for i in incidents] == list(range(1, 301))
    for i in incidents:
        assert (i.resolved_at is not None) == (i.status == "resolved")
        assert bool(i.assignee_ids) == (i.status != "resolved")
        assert directory.services[i.service_id].account_id == i.account_id


def test_services_have_policies_teams_and_status(directory: Directory) -> None:
    for service in directory.services_of("PACME01"):
        assert service.escalation_policy_id in directory.escalation_policies
        assert all(t in directory.teams for t in service.team_ids)
        assert directory.service_status(service.id) in {
            "active",
            "warning",
            "critical",
            "maintenance",
            "disabled",
        }
    statuses = {directory.service_status(s.id) for s in directory.services_of("PACME01")}
    assert "critical" in statuses


def test_audit_records_inside_the_default_window(directory: Directory) -> None:
    records = directory.audit_records_of("PACME01")
    assert all(NOW - 86400 < r.execution_time < NOW for r in records)
    times = [r.execution_time for r in records]
    assert times == sorted(times, reverse=True)
    assert {r.action for r in records} <= {"create", "update", "delete"}


def test_api_keys_are_secret_values(directory: Directory) -> None:
    key = directory.api_keys["PACME01"]
    assert re.fullmatch(r"u\+[A-Za-z0-9_-]{18}", key.token)
    assert key.token not in repr(key)
    assert directory.find_api_key(key.token) == key
    assert directory.find_api_key(key.token + "x") is None
    assert directory.find_api_key("") is None
    assert directory.find_api_key("\udcff") is None


def test_find_user(directory: Directory) -> None:
    admin = directory.users_of("PACME01")[0]
    assert directory.find_user(admin.id) == admin
    assert directory.find_user(" ADMIN@ACME.example ") == admin
    assert directory.find_user("nobody@acme.example") is None


def test_add_incident_numbers_and_ids() -> None:
    d = build_directory(1, now=NOW)
    service = d.services_of("PEURO01")[0]
    incident = d.add_incident(
        account_id="PEURO01",
        title="Test",
        service_id=service.id,
        urgency="low",
        created_at=NOW,
    )
    assert incident.incident_number == 31
    assert PD_ID.fullmatch(incident.id)
    assert incident.status == "triggered"
    assert d.incidents[incident.id] == incident
    assert d.service_status(service.id) in {"critical", "maintenance", "disabled"}


def test_needs_users() -> None:
    with pytest.raises(ValueError, match="at least one user"):
        build_directory(1, 0, now=NOW)
