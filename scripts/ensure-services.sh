#!/usr/bin/env bash
# Make sure what the test suite needs is installed and running on this machine:
# PostgreSQL on 127.0.0.1:5432 (trust auth for local TCP) with the pdauth_test database,
# and Debian's chromium for the browser tests. Installs Debian packages only when missing.
set -euo pipefail

need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

if ! pg_ready; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    echo "PostgreSQL is installed but has no cluster" >&2
    exit 1
  fi
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # A freshly installed cluster asks for passwords over TCP; the suite uses trust on loopback.
  if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  pg_ready || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='pdauth_test'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "create database pdauth_test"
fi
echo "services ready: PostgreSQL on 127.0.0.1:5432 (pdauth_test), chromium at $(command -v chromium)"
