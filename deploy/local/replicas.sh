#!/usr/bin/env bash
# PostgreSQL and three FerroHSM replicas on this machine, for trying out and load-testing
# scale-out (docs/scaling.md). Loopback only; everything lives in one directory.
#
#   deploy/local/replicas.sh up   [DIR]   start PostgreSQL and the replicas, print how to reach them
#   deploy/local/replicas.sh down [DIR]   stop them (by the PIDs recorded in DIR)
#
# DIR defaults to ./ferrohsm-cluster. Settings (environment):
#   FERROHSM_BIN       the server binary [default: target/release/ferrohsm-server, else on PATH]
#   REPLICAS           how many replicas [default: 3]
#   BASE_PORT          replica i listens on 127.0.0.1:BASE_PORT+i [default: 8441]
#   PG_PORT            PostgreSQL's port [default: 55432]
#   FERROHSM_PG_BIN    PostgreSQL's programs [default: the newest /usr/lib/postgresql/*/bin]
#   EXTRA_ARGS         more flags for every replica (e.g. "--policy-file policy.toml")
#
# Each replica is `ferrohsm-server dev` with its own data directory; the first creates the
# master key and the development certificate, and the others get copies (replicas must
# share the master key; one certificate means one CA file for clients). In production, run
# `ferrohsm-server serve` with the same master key, certificate and `--database-url` on each
# machine instead. PostgreSQL needs Debian's `postgresql` package (`apt-get install
# postgresql`); when run as root, PostgreSQL runs as the `postgres` user.
set -euo pipefail

command="${1:-}"
dir="${2:-./ferrohsm-cluster}"
replicas="${REPLICAS:-3}"
base_port="${BASE_PORT:-8441}"
pg_port="${PG_PORT:-55432}"

die() { echo "replicas.sh: $*" >&2; exit 1; }

pg_bin() {
    if [ -n "${FERROHSM_PG_BIN:-}" ]; then echo "$FERROHSM_PG_BIN"; return; fi
    local newest
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$newest" ] || die "PostgreSQL is not installed: apt-get install postgresql (or set FERROHSM_PG_BIN)"
    echo "$newest"
}

# Runs a PostgreSQL program as the postgres user when we are root (it refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

server_bin() {
    if [ -n "${FERROHSM_BIN:-}" ]; then echo "$FERROHSM_BIN"; return; fi
    local here
    here="$(cd "$(dirname "$0")/../.." && pwd)"
    if [ -x "$here/target/release/ferrohsm-server" ]; then
        echo "$here/target/release/ferrohsm-server"
    elif command -v ferrohsm-server >/dev/null; then
        command -v ferrohsm-server
    else
        die "no ferrohsm-server: cargo build --release -p ferrohsm-server, or set FERROHSM_BIN"
    fi
}

# Whether process $1 runs (a zombie that nobody reaped yet does not).
alive() {
    [ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" | grep -q '^Z'
}

# Waits until replica $1's log shows the token line (it is serving), or fails.
wait_replica() {
    local log="$1" pid="$2"
    for _ in $(seq 1 300); do
        if grep -q 'export FERROHSM_TOKEN=' "$log" 2>/dev/null; then return 0; fi
        alive "$pid" || die "a replica exited; see $log"
        sleep 0.1
    done
    die "a replica did not start within 30 s; see $log"
}

up() {
    local bin pgbin url
    bin="$(server_bin)"
    pgbin="$(pg_bin)"
    [ ! -e "$dir/replica-0.pid" ] || die "$dir already runs a cluster: $0 down $dir first"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ ! -d "$dir/pg/data" ]; then
        mkdir -p "$dir/pg"
        if [ "$(id -u)" = 0 ]; then
            chown postgres: "$dir/pg"
            # The postgres user must be able to reach its directory.
            chmod o+x "$dir"
        fi
        as_pg "$pgbin/initdb" -D "$dir/pg/data" -U ferrohsm -A trust -E UTF8 --locale=C >/dev/null
    fi
    as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/postgres.log" -w \
        -o "-k $dir/pg -p $pg_port -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    "$pgbin/psql" -h 127.0.0.1 -p "$pg_port" -U ferrohsm -d postgres -qtA \
        -c "SELECT 1 FROM pg_database WHERE datname = 'ferrohsm'" | grep -q 1 \
        || "$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U ferrohsm ferrohsm
    url="postgres://ferrohsm@127.0.0.1:$pg_port/ferrohsm"
    local i data log
    for i in $(seq 0 $((replicas - 1))); do
        data="$dir/replica-$i"
        log="$dir/replica-$i.log"
        mkdir -p "$data"
        if [ "$i" -gt 0 ]; then
            # The same master key and certificate as the first replica.
            cp "$dir/replica-0/master.key" "$data/master.key"
            mkdir -p "$data/tls"
            cp "$dir/replica-0/tls/"*.pem "$data/tls/"
        fi
        # shellcheck disable=SC2086 # EXTRA_ARGS is a list of flags
        nohup "$bin" dev --data-dir "$data" --listen "127.0.0.1:$((base_port + i))" \
            --key-store postgres --database-url "$url" ${EXTRA_ARGS:-} >"$log" 2>&1 </dev/null &
        echo $! >"$dir/replica-$i.pid"
        wait_replica "$log" "$(cat "$dir/replica-$i.pid")"
    done
    local token ca
    token="$(sed -n 's/^ *export FERROHSM_TOKEN=//p' "$dir/replica-0.log" | head -n 1)"
    ca="$dir/replica-0/tls/ca.pem"
    echo "PostgreSQL: $url"
    for i in $(seq 0 $((replicas - 1))); do
        echo "replica $i: https://localhost:$((base_port + i))  (log $dir/replica-$i.log)"
    done
    echo "export FERROHSM_CA_CERT=$ca"
    echo "export FERROHSM_TOKEN=$token"
    echo "export FERROHSM_SERVER=https://localhost:$base_port"
    echo "Stop with: $0 down $dir"
}

down() {
    [ -d "$dir" ] || die "no cluster in $dir"
    local pidfile pid
    for pidfile in "$dir"/replica-*.pid; do
        [ -e "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    if [ -e "$dir/pg/data/postmaster.pid" ]; then
        as_pg "$(pg_bin)/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null
    fi
    echo "stopped the cluster in $dir (data kept; remove the directory to start afresh)"
}

case "$command" in
    up) up ;;
    down) down ;;
    *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
