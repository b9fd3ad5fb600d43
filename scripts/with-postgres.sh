#!/usr/bin/env bash
# Runs CMD... next to a throw-away PostgreSQL cluster:
#   scripts/with-postgres.sh swift test --filter Postgres
# Installs PostgreSQL from Debian if it is missing, creates a cluster in a
# temporary folder (initdb as a non-root user: `postgres` when run as root),
# starts it on a free loopback port, exports SYNDDB_TEST_POSTGRES with its URL
# (a superuser that may create databases: each test makes its own), runs the
# command, then stops the cluster and removes the folder, whatever happened.
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: scripts/with-postgres.sh CMD [ARGS...]" >&2
  exit 2
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "with-postgres: installing postgresql from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

# PostgreSQL refuses to run as root: run the server as `postgres` then.
as=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  as=(runuser -u postgres --)
fi

dir=$(mktemp -d /tmp/synd-postgres.XXXXXX)
chmod 755 "$dir"
if [ ${#as[@]} -gt 0 ]; then chown postgres "$dir"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cleanup() {
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${as[@]}" "$bin/initdb" -D "$dir/data" -U synd -A trust --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
# fsync stays on: the store's durability is PostgreSQL's. Enough connections for parallel tests.
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }

export SYNDDB_TEST_POSTGRES="postgresql://synd@127.0.0.1:$port/postgres?sslmode=disable"
echo "with-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $SYNDDB_TEST_POSTGRES" >&2
set +e
"$@"
status=$?
set -e
exit $status
