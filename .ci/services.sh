#!/usr/bin/env bash
# Install (from Debian packages, when missing) and start PostgreSQL and Redis on 127.0.0.1, and
# install Chromium for the browser tests. Idempotent: safe to run again on a machine that has them.
# Prints the DATABASE_URL and REDIS_URL to use.
set -euo pipefail

PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
PGDATA=${PGDATA:-/var/lib/sluice-ci/pgdata}
SUDO=""
AS_POSTGRES=(runuser -u postgres --)
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
  AS_POSTGRES=(sudo -u postgres)
fi

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
if [ ${#need[@]} -gt 0 ]; then
  echo "services: installing ${need[*]}"
  $SUDO apt-get update -qq
  # With recommends: Chromium needs its fonts to render pages the browser tests read.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")

if ! "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PGPORT" -q; then
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    $SUDO mkdir -p "$PGDATA"
    $SUDO chown -R postgres:postgres "$(dirname "$PGDATA")"
    "${AS_POSTGRES[@]}" "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  "${AS_POSTGRES[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -c fsync=off -c max_connections=200 -k /tmp" start >/dev/null
fi
for _ in $(seq 1 30); do "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PGPORT" -q && break; sleep 0.5; done
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='sluice'" | grep -q 1 ||
  psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE ROLE sluice LOGIN CREATEDB PASSWORD 'sluice'"
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='sluice'" | grep -q 1 ||
  psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE sluice OWNER sluice"

if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save "" --appendonly no \
    --logfile /tmp/sluice-redis.log >/dev/null
fi
for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.5; done

echo "DATABASE_URL=postgres://sluice:sluice@127.0.0.1:$PGPORT/sluice"
echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
