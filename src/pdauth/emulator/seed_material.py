"""The raw material of the emulator's seeded directory: names, time zones, roles, job titles,
teams, services, incident titles and audit actions, with the weights the seeding draws by.
Plain data; :func:`pdauth.emulator.data.build_directory` turns it into a directory."""

from __future__ import annotations

import string


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


US_FIRST = words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Christopher Karen Daniel Lisa Matthew Nancy "
    "Anthony Betty Mark Sandra Donald Ashley Steven Kimberly Andrew Emily Kenneth Donna "
    "Joshua Michelle Kevin Carol Brian Amanda Priya Wei Carlos Aisha Hiroshi Fatima Diego Mei"
)
US_LAST = words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott "
    "Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter "
    "Roberts Patel Chen Kim"
)
EU_FIRST = words(
    "Lukas Emma Matteo Sofia Jan Anna Hugo Chloe Lars Ingrid Pierre Camille Mateusz Zofia "
    "Joao Ines Sven Freya Luca Giulia Niels Eva Pablo Lucia"
)
EU_LAST = words(
    "Muller Schmidt Rossi Bianchi Dubois Laurent Jansen Visser Nowak Kowalski Silva Santos "
    "Andersson Johansson Garcia Fernandez Moreau Fischer Weber Hansen Nielsen Romano Costa "
    "Novak"
)
US_ABILITIES = words(
    "teams read_only_users audit_trail urgencies advanced_permissions service_support_hours "
    "manage_schedules response_operations sso"
)
EU_ABILITIES = words("teams audit_trail urgencies manage_schedules")
KEY_ALPHABET = string.ascii_letters + string.digits + "-_"
US_ZONES = (
    ("America/New_York", 8),
    ("America/Chicago", 4),
    ("America/Denver", 2),
    ("America/Los_Angeles", 6),
    ("America/Phoenix", 1),
    ("Europe/London", 2),
    ("Asia/Kolkata", 2),
    ("Asia/Tokyo", 1),
    ("Australia/Sydney", 1),
)
EU_ZONES = (
    ("Europe/Berlin", 4),
    ("Europe/Paris", 3),
    ("Europe/Amsterdam", 2),
    ("Europe/Madrid", 2),
    ("Europe/Rome", 2),
    ("Europe/Warsaw", 1),
    ("Europe/Stockholm", 1),
    ("Europe/Lisbon", 1),
)
COLORS = words(
    "purple red green blue orange teal brown cayenne chocolate forest-green navy crimson "
    "dark-goldenrod dark-magenta dark-orange dark-slate-blue dark-slate-grey firebrick indigo "
    "maroon sea-green sienna slate-blue steel-blue violet-red"
)
ROLES = (("user", 60), ("limited_user", 15), ("observer", 8), ("read_only_user", 7), ("admin", 10))
JOB_TITLES = (
    "Site Reliability Engineer",
    "Senior Software Engineer",
    "Software Engineer",
    "Staff Engineer",
    "Engineering Manager",
    "Platform Engineer",
    "DevOps Engineer",
    "Network Engineer",
    "Database Administrator",
    "Security Engineer",
    "Incident Commander",
    "Support Engineer",
    "Product Manager",
    "Director of Engineering",
    "QA Engineer",
)
TEAM_NAMES = (
    "Platform",
    "Payments",
    "Core API",
    "Mobile",
    "Data Infrastructure",
    "Security",
    "Customer Support",
    "Networking",
)
SERVICE_NAMES = (
    ("Checkout API", "Takes orders and charges cards."),
    ("Payments Gateway", "Talks to card processors."),
    ("User Accounts", "Sign-up, login and profiles."),
    ("Search", "Product search cluster."),
    ("Inventory", "Stock levels and reservations."),
    ("Notifications", "E-mail, SMS and push delivery."),
    ("Mobile Backend", "API for the iOS and Android apps."),
    ("Primary Database", "PostgreSQL primary and replicas."),
    ("Message Queue", "Kafka brokers."),
    ("CDN Edge", "Static assets and caching."),
    ("Billing", "Invoices and subscriptions."),
    ("Recommendations", "Personalised suggestions."),
    ("Internal Admin", "Back-office tools."),
    ("Data Warehouse", "Nightly ETL and reporting."),
    ("Auth Service", "Tokens and sessions."),
    ("Shipping", "Carrier integrations."),
    ("Analytics Ingest", "Event collection pipeline."),
)
INCIDENT_TITLES = (
    "High error rate on {svc}",
    "{svc}: p99 latency above threshold",
    "{svc} health check failing",
    "Disk usage above 90% on {svc} hosts",
    "{svc}: elevated 5xx responses",
    "Certificate for {svc} expires in 7 days",
    "{svc} queue backlog growing",
    "Memory pressure on {svc} pods",
    "{svc}: connection pool exhausted",
    "Synthetic check failed for {svc}",
    "{svc} replica lag above 30s",
    "CPU throttling on {svc}",
)
AUDIT_ACTIONS = (
    ("user", "create"),
    ("user", "update"),
    ("user", "delete"),
    ("service", "update"),
    ("service", "create"),
    ("team", "update"),
    ("escalation_policy", "update"),
    ("team", "create"),
)
METHODS = (("browser", 6), ("api_token", 2), ("oauth", 2), ("identity_provider", 1))
