#!/usr/bin/env bash
# Shows that a PostgreSQL failover loses no acknowledged commit: a primary
# with a synchronous standby, a sequencer on the primary, a writer committing
# through the VFS (libsyndvfs.so, from scripts/build-sqlite-tools.sh), then
# kill -9 of the primary (and its sequencer) mid-load, promotion of the
# standby, a sequencer on it, and the writer carrying on there. Every commit
# the writer saw acknowledged must be in the database, nothing it never wrote,
# and `synd validate` must pass on the promoted standby.
#
#   scripts/postgres-standby-failover.sh      (not part of CI; about 30 s)
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
cd "$(dirname "$0")/.."
synd=${SYND:-.build/debug/synd}
extension=.build-static/release/libsyndvfs
[ -x "$synd" ] || { echo "build synd first: swift build" >&2; exit 1; }
[ -f "$extension.so" ] || { echo "build the extension first: scripts/build-sqlite-tools.sh" >&2; exit 1; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  as=(runuser -u postgres --)
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

dir=$(mktemp -d /tmp/synd-standby.XXXXXX)
chmod 755 "$dir"
[ ${#as[@]} -gt 0 ] && chown postgres "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "${as[@]}" "$bin/pg_ctl" -D "$dir/primary" -m immediate stop >/dev/null 2>&1 || true
  "${as[@]}" "$bin/pg_ctl" -D "$dir/standby" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
say() { echo "== $*"; }

p1=$(free_port); p2=$(free_port)
say "primary on port $p1, synchronous standby 'standby1' on port $p2"
"${as[@]}" "$bin/initdb" -D "$dir/primary" -U synd -A trust --no-sync >/dev/null
cat >> "$dir/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $p1
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 4
synchronous_standby_names = 'FIRST 1 (standby1)'
synchronous_commit = on
CONF
"${as[@]}" "$bin/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w start >/dev/null
"${as[@]}" "$bin/pg_basebackup" -h 127.0.0.1 -p "$p1" -U synd -D "$dir/standby" -R -X stream >/dev/null
echo "port = $p2" >> "$dir/standby/postgresql.conf"
# After pg_basebackup -R's own line: the last setting wins.
echo "primary_conninfo = 'host=127.0.0.1 port=$p1 user=synd application_name=standby1'" >> "$dir/standby/postgresql.auto.conf"
"${as[@]}" "$bin/pg_ctl" -D "$dir/standby" -l "$dir/standby.log" -w start >/dev/null
for _ in $(seq 50); do
  state=$(psql -X -A -t "postgresql://synd@127.0.0.1:$p1/postgres" -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")
  [ "$state" = sync ] && break
  sleep 0.2
done
[ "$state" = sync ] || { echo "the standby did not become synchronous" >&2; tail -5 "$dir/standby.log" >&2; exit 1; }
psql -X -q "postgresql://synd@127.0.0.1:$p1/postgres" -c "CREATE DATABASE synddb"

start_sequencer() {  # port, postgres port, log
  "$synd" sequencer --data "$dir/key" --port "$1" --store "postgresql://synd@127.0.0.1:$2/synddb?sslmode=disable" >"$3" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do grep -q "listening on" "$3" && return 0; sleep 0.1; done
  cat "$3" >&2; return 1
}
sa=$(free_port); sb=$(free_port)
start_sequencer "$sa" "$p1" "$dir/seq-a.log"
seq_a=${pids[-1]}
say "sequencer A on the primary: http://127.0.0.1:$sa"

/usr/bin/python3 -u - "$extension" "http://127.0.0.1:$sa,http://127.0.0.1:$sb" "$dir/stop" >"$dir/writer.log" 2>&1 <<'PY' &
import os, sqlite3, sys, time
ext, sequencers, stop = sys.argv[1:4]
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(ext)
db = sqlite3.connect(f"file:failover?vfs=synddb&sequencer={sequencers}&timeout_ms=2000", uri=True, isolation_level=None, timeout=10)
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pad BLOB)")
i = 0
while not os.path.exists(stop):
    i += 1
    try:
        db.execute("INSERT INTO t VALUES (?, randomblob(300))", (i,))
        print("ok", i)
    except sqlite3.Error as e:
        print("fail", i, e)
        time.sleep(0.05)
PY
writer=$!
pids+=($writer)
sleep 3
before=$(grep -c '^ok' "$dir/writer.log" || true)
say "writer committed $before transactions; kill -9 of the primary and of sequencer A"
"${as[@]}" "$bin/pg_ctl" -D "$dir/primary" -m immediate stop >/dev/null
kill -9 "$seq_a"
say "promoting the standby; sequencer B on it: http://127.0.0.1:$sb"
"${as[@]}" "$bin/pg_ctl" -D "$dir/standby" -w promote >/dev/null
# Its configuration came from the primary's: it would wait for a synchronous
# standby of its own that does not exist (Patroni and the like do this step).
psql -X -q "postgresql://synd@127.0.0.1:$p2/postgres" -c "ALTER SYSTEM SET synchronous_standby_names = ''" -c "SELECT pg_reload_conf()" >/dev/null
start_sequencer "$sb" "$p2" "$dir/seq-b.log"
sleep 3
touch "$dir/stop"
wait "$writer" || true

acked=$(grep '^ok' "$dir/writer.log" | awk '{print $2}' | sort -n)
failed=$(grep '^fail' "$dir/writer.log" | awk '{print $2}' | sort -n | uniq)
rows=$(psql -X -A -t "postgresql://synd@127.0.0.1:$p2/synddb" -c "SELECT 1" >/dev/null && \
  /usr/bin/python3 - "$extension" "http://127.0.0.1:$sb" <<'PY'
import sqlite3, sys
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(sys.argv[1])
db = sqlite3.connect(f"file:failover?vfs=synddb&sequencer={sys.argv[2]}&mode=ro", uri=True)
for (i,) in db.execute("SELECT id FROM t ORDER BY id"): print(i)
PY
)
n_acked=$(echo "$acked" | grep -c . || true)
after=$((n_acked - before))
lost=$(comm -23 <(echo "$acked") <(echo "$rows") | grep -c . || true)
unknown=$(comm -13 <(echo "$acked") <(echo "$rows") | comm -23 - <(echo "$failed") | grep -c . || true)
say "acknowledged: $n_acked ($after after the failover), failed or unknown: $(echo "$failed" | grep -c . || true), rows: $(echo "$rows" | grep -c .)"
say "acknowledged but missing: $lost; present but never attempted: $unknown"
"$synd" validate --sequencer "http://127.0.0.1:$sb" --db failover
[ "$lost" -eq 0 ] && [ "$unknown" -eq 0 ] && [ "$after" -gt 0 ] || { echo "FAILED" >&2; exit 1; }
say "no acknowledged commit lost across the failover"
