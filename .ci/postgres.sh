#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the release-history tests, on 127.0.0.1 and a Unix socket only.
#   .ci/postgres.sh start   -> prints "DIR URL" (URL: postgresql://laf:PASSWORD@127.0.0.1:PORT/postgres)
#   .ci/postgres.sh stop DIR -> stops that cluster and removes DIR
# The server refuses to run as root: as root, initdb and pg_ctl run as the `postgres` user (the Debian package
# creates it). TCP logins need the generated password (scram-sha-256), so wrong-password handling is real.
set -euo pipefail
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)}
as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "${1:-}" in
start)
  if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    echo "postgres.sh: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
    exit 1
  fi
  D=$(mktemp -d "${TMPDIR:-/tmp}/laf-pg.XXXXXX")
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PW=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  printf '%s\n' "$PW" > "$D/pw"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$D"; fi
  as_server "$PGBIN/initdb" -D "$D/data" -U laf --auth-local=trust --auth-host=scram-sha-256 --pwfile="$D/pw" -E UTF8 >"$D/initdb.log" 2>&1 \
    || { cat "$D/initdb.log" >&2; rm -rf "$D"; exit 1; }
  rm -f "$D/pw"
  # fsync off: a test cluster, thrown away at the end (the tests kill clients, never this server)
  as_server "$PGBIN/pg_ctl" -D "$D/data" -l "$D/log" -w -t 60 \
    -o "-p $PORT -k $D -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" start >/dev/null \
    || { cat "$D/log" >&2; rm -rf "$D"; exit 1; }
  echo "$D postgresql://laf:$PW@127.0.0.1:$PORT/postgres"
  ;;
stop)
  D=${2:?usage: postgres.sh stop DIR}
  case "$D" in */laf-pg.*) ;; *) echo "postgres.sh: $D is not a cluster this script made" >&2; exit 2 ;; esac
  if [ -d "$D/data" ]; then as_server "$PGBIN/pg_ctl" -D "$D/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$D"
  ;;
*)
  echo "usage: $0 start | stop DIR" >&2
  exit 2
  ;;
esac
