"""Seeded, deterministic directory of the emulated PagerDuty: accounts, users, teams, services,
incidents, audit records and account-level API keys.

Everything is drawn from one ``random.Random(seed)`` (never the global generator), so the same seed
and ``now`` always give the same directory — tests and demos can rely on ids, names and counts. Two
accounts exist: a US account (subdomain ``acme``, ``users_per_account`` users, ~300 incidents, ~400
audit records) and a small EU account (subdomain ``eurocorp``, ~20 users). The first user of each
account is an admin with a fixed e-mail (``admin@acme.example``, ``admin@eurocorp.example``) so
the identity side and tests can pick them. Times are POSIX seconds; the REST layer formats them.
The directory is plain data plus a few look-ups; the only mutation is :meth:`Directory.add_incident`
(``POST /incidents``). Seeding is data (:mod:`~pdauth.emulator.seed_material` and the two
account specs) plus a short loop of steps per account. It imports nothing from pdauth outside
the emulator.
"""

from __future__ import annotations

import hmac
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pdauth.emulator.seed_material import (
    AUDIT_ACTIONS,
    COLORS,
    EU_ABILITIES,
    EU_FIRST,
    EU_LAST,
    EU_ZONES,
    INCIDENT_TITLES,
    JOB_TITLES,
    KEY_ALPHABET,
    METHODS,
    ROLES,
    SERVICE_NAMES,
    TEAM_NAMES,
    US_ABILITIES,
    US_FIRST,
    US_LAST,
    US_ZONES,
)

__all__ = [
    "Account",
    "ApiKey",
    "AuditRecord",
    "Directory",
    "EscalationPolicy",
    "Incident",
    "Service",
    "Team",
    "User",
    "build_directory",
]

Region = Literal["us", "eu"]

US_ACCOUNT_ID = "PACME01"
EU_ACCOUNT_ID = "PEURO01"
_DAY = 86400.0
_ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Account:
    id: str
    subdomain: str
    name: str
    region: Region
    time_zone: str = "Etc/UTC"
    abilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Team:
    id: str
    account_id: str
    name: str
    description: str


@dataclass(frozen=True)
class User:
    id: str
    account_id: str
    name: str
    email: str
    role: str
    time_zone: str
    color: str
    job_title: str | None
    description: str | None = None
    team_ids: tuple[str, ...] = ()
    invitation_sent: bool = False


@dataclass(frozen=True)
class EscalationPolicy:
    id: str
    account_id: str
    name: str


@dataclass(frozen=True)
class Service:
    id: str
    account_id: str
    name: str
    description: str
    # Configured state: "active", "disabled" or "maintenance". The status PagerDuty reports
    # ("critical"/"warning" with open incidents) is derived by Directory.service_status.
    status: str
    escalation_policy_id: str
    team_ids: tuple[str, ...]
    created_at: float
    auto_resolve_timeout: int
    acknowledgement_timeout: int
    alert_creation: str = "create_alerts_and_incidents"


@dataclass(frozen=True)
class Incident:
    id: str
    account_id: str
    incident_number: int
    title: str
    status: Literal["triggered", "acknowledged", "resolved"]
    urgency: Literal["high", "low"]
    service_id: str
    escalation_policy_id: str
    created_at: float
    updated_at: float
    resolved_at: float | None
    incident_key: str
    assignee_ids: tuple[str, ...]
    body_details: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    id: str
    account_id: str
    execution_time: float
    action: str
    actor_user_id: str | None
    method_type: str
    root_resource_type: str
    root_resource_id: str
    root_resource_name: str
    request_id: str


@dataclass(frozen=True)
class ApiKey:
    """An account-level REST API key (``Authorization: Token token=<token>``). A secret."""

    id: str
    account_id: str
    description: str
    token: str = field(repr=False)
    read_only: bool = False


class Directory:
    """The whole seeded world, indexed for the REST and identity sides.

    ``api_keys`` is keyed by account id (``directory.api_keys["PACME01"].token``); use
    :meth:`find_api_key` to resolve a presented key.
    """

    def __init__(self, id_seed: str = "ids") -> None:
        self.accounts: dict[str, Account] = {}
        self.users: dict[str, User] = {}
        self.teams: dict[str, Team] = {}
        self.escalation_policies: dict[str, EscalationPolicy] = {}
        self.services: dict[str, Service] = {}
        self.incidents: dict[str, Incident] = {}
        self.audit_records: dict[str, AuditRecord] = {}
        self.api_keys: dict[str, ApiKey] = {}
        self._users_by_account: dict[str, list[User]] = {}
        self._users_by_email: dict[str, User] = {}
        self._ids: set[str] = set()
        self._id_rng = _seeded(id_seed)

    # -- look-ups ---------------------------------------------------------------------------

    def account_by_subdomain(self, subdomain: str) -> Account | None:
        wanted = subdomain.strip().lower()
        for account in self.accounts.values():
            if account.subdomain == wanted:
                return account
        return None

    def users_of(self, account_id: str) -> list[User]:
        """Users of an account in their stable (creation) order."""
        return list(self._users_by_account.get(account_id, ()))

    def find_user(self, email_or_id: str) -> User | None:
        """A user by id (exact) or e-mail (case-insensitive)."""
        user = self.users.get(email_or_id)
        if user is not None:
            return user
        return self._users_by_email.get(email_or_id.strip().lower())

    def teams_of(self, account_id: str) -> list[Team]:
        return [t for t in self.teams.values() if t.account_id == account_id]

    def services_of(self, account_id: str) -> list[Service]:
        return [s for s in self.services.values() if s.account_id == account_id]

    def incidents_of(self, account_id: str) -> list[Incident]:
        """Incidents of an account, oldest first (PagerDuty's default order)."""
        found = [i for i in self.incidents.values() if i.account_id == account_id]
        found.sort(key=lambda i: (i.created_at, i.incident_number))
        return found

    def audit_records_of(self, account_id: str) -> list[AuditRecord]:
        """Audit records of an account, newest first (PagerDuty's order), ties broken by id."""
        found = [r for r in self.audit_records.values() if r.account_id == account_id]
        found.sort(key=lambda r: (-r.execution_time, r.id))
        return found

    def find_api_key(self, token: str) -> ApiKey | None:
        """The API key whose value equals ``token`` (constant-time comparison)."""
        presented = token.encode("utf-8", "surrogatepass")
        match: ApiKey | None = None
        for key in self.api_keys.values():
            if hmac.compare_digest(key.token.encode(), presented):
                match = key
        return match

    def service_status(self, service_id: str) -> str:
        """The status PagerDuty would report: configured state, else derived from open incidents."""
        service = self.services[service_id]
        if service.status != "active":
            return service.status
        statuses = {
            i.status
            for i in self.incidents.values()
            if i.service_id == service_id and i.status != "resolved"
        }
        if "triggered" in statuses:
            return "critical"
        if "acknowledged" in statuses:
            return "warning"
        return "active"

    def last_incident_at(self, service_id: str) -> float | None:
        times = [i.created_at for i in self.incidents.values() if i.service_id == service_id]
        return max(times) if times else None

    # -- mutation ---------------------------------------------------------------------------

    def reserve_ids(self, *ids: str) -> None:
        """Mark fixed ids (the accounts') as taken so generated ids never collide with them."""
        self._ids.update(ids)

    def new_id(self, rng: random.Random | None = None) -> str:
        """A fresh, unique PagerDuty-looking id: "P" + 6 uppercase alphanumerics, drawn from
        ``rng`` (default: the directory's own stream)."""
        source = rng or self._id_rng
        while True:
            candidate = "P" + "".join(source.choice(_ID_ALPHABET) for _ in range(6))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def add_incident(
        self,
        *,
        account_id: str,
        title: str,
        service_id: str,
        urgency: Literal["high", "low"],
        created_at: float,
        incident_key: str | None = None,
        assignee_ids: tuple[str, ...] = (),
        body_details: str | None = None,
    ) -> Incident:
        """Create a triggered incident (``POST /incidents``) with the next incident number."""
        service = self.services[service_id]
        number = 1 + max(
            (i.incident_number for i in self.incidents.values() if i.account_id == account_id),
            default=0,
        )
        incident_id = self.new_id()
        incident = Incident(
            id=incident_id,
            account_id=account_id,
            incident_number=number,
            title=title,
            status="triggered",
            urgency=urgency,
            service_id=service_id,
            escalation_policy_id=service.escalation_policy_id,
            created_at=created_at,
            updated_at=created_at,
            resolved_at=None,
            incident_key=incident_key or _hex(self._id_rng, 32),
            assignee_ids=assignee_ids,
            body_details=body_details,
        )
        self.incidents[incident_id] = incident
        return incident

    def add_user(self, user: User) -> None:
        self.users[user.id] = user
        self._users_by_account.setdefault(user.account_id, []).append(user)
        self._users_by_email[user.email.lower()] = user


def _seeded(key: str) -> random.Random:
    # Reproducible test data, not secrets: a seeded PRNG is the point here.
    return random.Random(key)  # noqa: S311


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table], k=1)[0]


def _hex(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(length))


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def build_directory(
    seed: int = 1,
    users_per_account: int = 250,
    *,
    now: float | None = None,
    eu_users: int = 20,
    us_incidents: int = 300,
    eu_incidents: int = 30,
    us_audit_records: int = 400,
    eu_audit_records: int = 40,
) -> Directory:
    """Build the seeded directory. Same ``seed`` and ``now`` → identical directory.

    ``now`` is the emulator clock at build time (POSIX seconds; default: the real clock);
    incidents spread over the 90 days before it and audit records over the 20 hours before it
    (inside ``GET /audit/records``' default 24-hour window).
    """
    if users_per_account < 1 or eu_users < 1:
        raise ValueError("each account needs at least one user (its admin)")
    built_at = time.time() if now is None else now
    rng = _seeded(str(seed))
    # Ids come from their own stream, so ids minted later (POST /incidents) never shift seed data.
    directory = Directory(id_seed=f"ids-{seed}")
    directory.reserve_ids(US_ACCOUNT_ID, EU_ACCOUNT_ID)

    specs: tuple[tuple[str, str, str, Region, int, int, int, str, tuple[str, ...]], ...] = (
        (
            US_ACCOUNT_ID, "acme", "Acme Corp", "us",
            users_per_account, us_incidents, us_audit_records, "America/New_York", US_ABILITIES,
        ),
        (
            EU_ACCOUNT_ID, "eurocorp", "EuroCorp GmbH", "eu",
            eu_users, eu_incidents, eu_audit_records, "Europe/Berlin", EU_ABILITIES,
        ),
    )  # fmt: skip
    for account_id, subdomain, name, region, n_users, n_incidents, n_audit, tz, abilities in specs:
        account = Account(
            id=account_id,
            subdomain=subdomain,
            name=name,
            region=region,
            time_zone=tz,
            abilities=tuple(sorted(abilities)),
        )
        directory.accounts[account.id] = account
        _populate_account(
            directory,
            account,
            # One stream per account, so resizing one account leaves the other unchanged.
            _seeded(f"{seed}-{subdomain}"),
            n_users=n_users,
            n_incidents=n_incidents,
            n_audit=n_audit,
            now=built_at,
        )
        key = ApiKey(
            id=directory.new_id(),
            account_id=account.id,
            description=f"{name} account-level key",
            token="u+" + "".join(rng.choice(KEY_ALPHABET) for _ in range(18)),
        )
        directory.api_keys[account.id] = key
    return directory


@dataclass
class _Seeding:
    """One account being seeded: its streams, and what earlier steps made for later ones."""

    directory: Directory
    account: Account
    rng: random.Random
    id_rng: random.Random
    now: float
    n_users: int
    n_incidents: int
    n_audit: int
    teams: list[Team] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    policies: list[EscalationPolicy] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)

    @property
    def eu(self) -> bool:
        return self.account.region == "eu"

    def new_id(self) -> str:
        return self.directory.new_id(self.id_rng)


def _populate_account(
    directory: Directory,
    account: Account,
    rng: random.Random,
    *,
    n_users: int,
    n_incidents: int,
    n_audit: int,
    now: float,
) -> None:
    # Ids from a per-account stream too, so resizing one account leaves the other's ids alone.
    id_rng = _seeded(f"ids-{account.subdomain}-{rng.random()}")
    seeding = _Seeding(directory, account, rng, id_rng, now, n_users, n_incidents, n_audit)
    # The order is part of the seed: each step draws from the same streams in turn.
    for step in _SEED_STEPS:
        step(seeding)


def _seed_teams(s: _Seeding) -> None:
    for team_name in TEAM_NAMES[:4] if s.eu else TEAM_NAMES:
        team = Team(
            id=s.new_id(),
            account_id=s.account.id,
            name=team_name,
            description=f"The {team_name} team.",
        )
        s.teams.append(team)
        s.directory.teams[team.id] = team


def _seed_users(s: _Seeding) -> None:
    rng, domain = s.rng, f"{s.account.subdomain}.example"
    first_names, last_names = (EU_FIRST, EU_LAST) if s.eu else (US_FIRST, US_LAST)
    zones = EU_ZONES if s.eu else US_ZONES
    used_emails: set[str] = set()
    for index in range(s.n_users):
        first, last = rng.choice(first_names), rng.choice(last_names)
        if index == 0:
            email, role = f"admin@{domain}", "admin"
            title: str | None = "Head of Operations"
        else:
            base = f"{_slug(first)}.{_slug(last)}"
            email, suffix = f"{base}@{domain}", 2
            while email in used_emails:
                email, suffix = f"{base}{suffix}@{domain}", suffix + 1
            role = "owner" if index == 1 else _weighted(rng, ROLES)
            title = rng.choice(JOB_TITLES) if rng.random() < 0.85 else None
        used_emails.add(email)
        team_ids = tuple(sorted({t.id for t in rng.sample(s.teams, k=rng.randint(0, 2))}))
        s.directory.add_user(
            User(
                id=s.new_id(),
                account_id=s.account.id,
                name=f"{first} {last}",
                email=email,
                role=role,
                time_zone=_weighted(rng, zones),
                color=rng.choice(COLORS),
                job_title=title,
                description=None
                if rng.random() < 0.7
                else f"{first} works on {rng.choice(s.teams).name}.",
                team_ids=team_ids,
                invitation_sent=rng.random() < 0.05,
            )
        )
    s.users = s.directory.users_of(s.account.id)


def _seed_policies(s: _Seeding) -> None:
    for team in s.teams:
        policy = EscalationPolicy(
            id=s.new_id(), account_id=s.account.id, name=f"{team.name} On-call"
        )
        s.policies.append(policy)
        s.directory.escalation_policies[policy.id] = policy


def _seed_services(s: _Seeding) -> None:
    rng = s.rng
    for index, (svc_name, svc_description) in enumerate(SERVICE_NAMES[: 6 if s.eu else 15]):
        team_index = index % len(s.teams)
        roll = rng.random()
        service = Service(
            id=s.new_id(),
            account_id=s.account.id,
            name=svc_name,
            description=svc_description,
            status="disabled" if roll < 0.07 else "maintenance" if roll < 0.12 else "active",
            escalation_policy_id=s.policies[team_index].id,
            team_ids=(s.teams[team_index].id,),
            created_at=s.now - rng.uniform(120, 900) * _DAY,
            auto_resolve_timeout=rng.choice((14400, 28800, 86400)),
            acknowledgement_timeout=rng.choice((600, 1800, 3600)),
        )
        s.services.append(service)
        s.directory.services[service.id] = service


def _seed_incidents(s: _Seeding) -> None:
    rng, now = s.rng, s.now
    responders = [u for u in s.users if u.role not in ("observer", "read_only_user")] or s.users
    live_services = [v for v in s.services if v.status == "active"] or s.services
    created = sorted(now - rng.uniform(60, 90 * _DAY) for _ in range(s.n_incidents))
    for number, created_at in enumerate(created, start=1):
        service = rng.choice(live_services)
        age_days = (now - created_at) / _DAY
        # Old incidents are almost all resolved; open ones cluster in the last few days.
        open_chance = 0.6 if age_days < 3 else 0.08 if age_days < 14 else 0.005
        status: Literal["triggered", "acknowledged", "resolved"]
        if rng.random() < open_chance:
            status = "triggered" if rng.random() < 0.5 else "acknowledged"
        else:
            status = "resolved"
        resolved_at = (
            min(now, created_at + rng.uniform(120, 6 * 3600)) if status == "resolved" else None
        )
        updated_at = resolved_at if resolved_at is not None else min(
            now, created_at + rng.uniform(0, 1800)
        )  # fmt: skip
        incident = Incident(
            id=s.new_id(),
            account_id=s.account.id,
            incident_number=number,
            title=rng.choice(INCIDENT_TITLES).format(svc=service.name),
            status=status,
            urgency="high" if rng.random() < 0.65 else "low",
            service_id=service.id,
            escalation_policy_id=service.escalation_policy_id,
            created_at=created_at,
            updated_at=updated_at,
            resolved_at=resolved_at,
            incident_key=_hex(rng, 32),
            assignee_ids=() if status == "resolved" else (rng.choice(responders).id,),
        )
        s.directory.incidents[incident.id] = incident


def _seed_audit_records(s: _Seeding) -> None:
    rng = s.rng
    resources: dict[str, list[tuple[str, str]]] = {
        "user": [(u.id, u.name) for u in s.users],
        "service": [(v.id, v.name) for v in s.services],
        "team": [(t.id, t.name) for t in s.teams],
        "escalation_policy": [(p.id, p.name) for p in s.policies],
    }
    admins = [u for u in s.users if u.role in ("admin", "owner")] or s.users
    for _ in range(s.n_audit):
        resource_type, action = rng.choice(AUDIT_ACTIONS)
        resource_id, resource_name = rng.choice(resources[resource_type])
        method = _weighted(rng, METHODS)
        actor = rng.choice(admins).id if method != "identity_provider" else None
        record = AuditRecord(
            id=s.new_id(),
            account_id=s.account.id,
            # Whole milliseconds, as PagerDuty reports them; inside the default 24 h window.
            execution_time=round(s.now - rng.uniform(60, 20 * 3600), 3),
            action=action,
            actor_user_id=actor,
            method_type=method,
            root_resource_type=resource_type,
            root_resource_id=resource_id,
            root_resource_name=resource_name,
            request_id=_hex(rng, 32),
        )
        s.directory.audit_records[record.id] = record


_SEED_STEPS: tuple[Callable[[_Seeding], None], ...] = (
    _seed_teams,
    _seed_users,
    _seed_policies,
    _seed_services,
    _seed_incidents,
    _seed_audit_records,
)
