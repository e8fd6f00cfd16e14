#!/usr/bin/env bash
# Make sure a PostgreSQL server answers at 127.0.0.1:5432 with a `test` database
# (trust auth), as the project's machines provide. Starts a stopped cluster, and on
# a fresh Debian machine where we are root, installs one. Under CI=true failure is fatal;
# elsewhere the PostgreSQL tests skip with instructions.
set -uo pipefail

ready() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

fail() {
  echo "postgres.sh: $*" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "postgres.sh: continuing; PostgreSQL tests will be skipped" >&2
  exit 0
}

if ! ready; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "postgres.sh: installing PostgreSQL from Debian packages"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
        || fail "could not install postgresql"
    else
      fail "no PostgreSQL at 127.0.0.1:5432 and cannot install one (need root + apt-get)"
    fi
  fi
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || fail "no PostgreSQL cluster configured"
  conf="/etc/postgresql/$version/main"
  # Trust auth on loopback, as on the project's machines (test data only).
  if ! grep -q "bighub-siem-tests" "$conf/pg_hba.conf" 2>/dev/null; then
    sed -i '1i host all all 127.0.0.1/32 trust # bighub-siem-tests\nhost all all ::1/128 trust # bighub-siem-tests\nlocal all all trust # bighub-siem-tests' "$conf/pg_hba.conf" 2>/dev/null || true
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start 2>/dev/null || true
  for _ in $(seq 1 50); do ready && break; sleep 0.2; done
  ready || fail "PostgreSQL did not start"
fi

if command -v psql >/dev/null 2>&1; then
  if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -Atc 'create database test' >/dev/null 2>&1 \
      || fail "cannot reach or create database test as user postgres"
  fi
fi
echo "postgres.sh: PostgreSQL ready at 127.0.0.1:5432"
