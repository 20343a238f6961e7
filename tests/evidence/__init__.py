"""Evidence tests (issue step 7): fault injection, fuzzing and load, plus their helpers — a
private PostgreSQL server, an in-process emulator rig with a fault-injecting transport, and the
scripts run as separate OS processes (a worker killed mid-refresh, a load generator)."""
