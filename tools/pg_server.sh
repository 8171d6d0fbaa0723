#!/usr/bin/env bash
# Copyright (c) Temperstack alerting collection contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# A throwaway PostgreSQL server for the tests (issue 11: the shared ledger is tested against a
# real server, no Docker, no mocks).
#
# Usage: tools/pg_server.sh start  DIR   start a server in DIR (made if missing); reuse one that runs there
#        tools/pg_server.sh stop   DIR   stop it and delete its data; nothing running is not an error
#        tools/pg_server.sh env    DIR   print `export` lines for the tests (the only output with passwords)
#        tools/pg_server.sh status DIR   say whether it runs (exit 0) or not (exit 3)
#
# The server:
#  - comes from Debian's postgresql package (PostgreSQL 15); `apt-get install postgresql` when no
#    initdb is found (TEMPERSTACK_PG_BINDIR=/path/to/bin picks another installation);
#  - runs as the system user temperstack-pg (TEMPERSTACK_PG_USER), made with useradd when run as
#    root, because initdb and postgres refuse to run as root; otherwise as the calling user;
#  - keeps data, socket and log in DIR/run.XXXXXX (mode 0700, owned by that user);
#  - listens on 127.0.0.1 only, on a free port picked at start, and accepts only scram-sha-256
#    password logins over TCP from 127.0.0.1 (pg_hba.conf has that one line: no socket logins);
#  - has three roles: temperstack (owns database temperstack), temperstack_job (LOGIN only, so no
#    CREATE on the database: the least-privilege job role) and temperstack_admin (superuser, for
#    tests that alter, kill or inspect things), each with a random password.
#
# `env DIR` prints:
#   TEMPERSTACK_TEST_PG_URL        postgresql://temperstack:<pw>@127.0.0.1:<port>/temperstack
#   TEMPERSTACK_TEST_PG_JOB_URL    the same for temperstack_job
#   TEMPERSTACK_TEST_PG_ADMIN_URL  the same for temperstack_admin (superuser)
#   TEMPERSTACK_TEST_PG_DATA       the data directory
#   TEMPERSTACK_TEST_PG_LOG        the server log
#   TEMPERSTACK_TEST_PG_CTL        a command prefix running pg_ctl as the server's user with -D, -l
#                                  and -w set: append `stop -m fast`, `start` or `restart`. It is a
#                                  shell word list (split it with shlex.split in Python).
# Every value is single-quoted and contains no quote, so both `eval` and shlex read it.
set -euo pipefail

PG_USER=${TEMPERSTACK_PG_USER:-temperstack-pg}
PG_MAJOR=15
# Where Debian's packages put the server binaries; the tests override it to try the install path.
PG_LIB_ROOT=${TEMPERSTACK_PG_LIB_ROOT:-/usr/lib/postgresql}
ADMIN_ROLE=temperstack_admin
OWNER_ROLE=temperstack
JOB_ROLE=temperstack_job
DATABASE=temperstack
START_TIMEOUT=60
STOP_TIMEOUT=20

die() {
    printf 'pg_server: %s\n' "$*" >&2
    exit 1
}

note() {
    printf 'pg_server: %s\n' "$*" >&2
}

usage() {
    sed -n '9,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# --- the PostgreSQL installation ---------------------------------------------------

# The directory with initdb, pg_ctl and postgres, or nothing.
find_bindir() {
    local candidate
    if [[ -n ${TEMPERSTACK_PG_BINDIR:-} ]]; then
        [[ -x $TEMPERSTACK_PG_BINDIR/initdb ]] && printf '%s\n' "$TEMPERSTACK_PG_BINDIR"
        return 0
    fi
    if [[ -x $PG_LIB_ROOT/$PG_MAJOR/bin/initdb ]]; then
        printf '%s\n' "$PG_LIB_ROOT/$PG_MAJOR/bin"
        return 0
    fi
    # Another Debian major version, newest first: the tests need nothing specific to 15.
    for candidate in $(find "$PG_LIB_ROOT" -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -rV); do
        if [[ -x $candidate ]]; then
            dirname "$candidate"
            return 0
        fi
    done
    # Debian's postgresql package does not put initdb on PATH, but a machine may link it there.
    candidate=$(command -v initdb 2>/dev/null || true)
    if [[ -n $candidate ]]; then
        dirname "$(readlink -f "$candidate")"
    fi
}

install_postgresql() {
    local log missing="PostgreSQL is not installed (no initdb in $PG_LIB_ROOT/*/bin or on PATH)"
    local elsewhere="or set TEMPERSTACK_PG_BINDIR to a directory holding initdb and pg_ctl"
    [[ $(id -u) -eq 0 ]] || die "$missing and only root can install it: run \`apt-get install postgresql\` as root, $elsewhere"
    command -v apt-get >/dev/null || die "$missing and there is no apt-get to install it: install PostgreSQL $PG_MAJOR, $elsewhere"
    note "PostgreSQL is not installed: apt-get install postgresql"
    log=$(mktemp)
    # A fresh machine may have no package lists yet: update once, then retry.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >"$log" 2>&1; then
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; } >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            rm -f "$log"
            die "\`apt-get install -y postgresql\` failed (its output is above): install PostgreSQL $PG_MAJOR by hand, $elsewhere"
        fi
    fi
    rm -f "$log"
}

require_bindir() {
    BINDIR=$(find_bindir)
    if [[ -z $BINDIR ]]; then
        install_postgresql
        BINDIR=$(find_bindir)
        [[ -n $BINDIR ]] || die "apt-get installed postgresql, but no initdb is in $PG_LIB_ROOT/*/bin: set TEMPERSTACK_PG_BINDIR"
    fi
    local tool
    for tool in initdb pg_ctl postgres psql pg_isready; do
        [[ -x $BINDIR/$tool ]] || die "$BINDIR has no $tool: set TEMPERSTACK_PG_BINDIR to a complete PostgreSQL bin directory"
    done
}

# --- the server's user ---------------------------------------------------------------

require_server_user() {
    if [[ $(id -u) -ne 0 ]]; then
        SERVER_USER=$(id -un)
        return 0
    fi
    if ! getent passwd "$PG_USER" >/dev/null; then
        # Another start (another checkout) may create it at the same moment: only a missing user
        # after useradd is an error.
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment 'temperstack.alerting test PostgreSQL' "$PG_USER" 2>/dev/null || true
        getent passwd "$PG_USER" >/dev/null \
            || die "could not create the system user $PG_USER with useradd (initdb and postgres refuse to run as root):" \
                "create it, or set TEMPERSTACK_PG_USER to an existing non-root user"
    fi
    SERVER_USER=$PG_USER
}

# The argv prefix that runs a command as USER: root switches, anyone else already is that user.
# env -C /: the caller's cwd (root's home, say) may be one USER cannot enter, and initdb and pg_ctl
# complain about it.
as_user_prefix() {
    local user=$1
    if [[ $(id -u) -eq 0 && $user != root ]]; then
        printf '%s\0' runuser -u "$user" -- env -C /
    fi
}

as_user() {
    local user=$1 prefix=()
    shift
    mapfile -d '' prefix < <(as_user_prefix "$user")
    "${prefix[@]}" "$@"
}

# --- state ---------------------------------------------------------------------------
# DIR/state (mode 0600) holds what `env`, `stop` and a reusing `start` need, passwords included.

state_file() {
    printf '%s/state\n' "$1"
}

save_state() {
    local file=$1 tmp
    tmp=$(mktemp "$file.XXXXXX")
    chmod 0600 "$tmp"
    {
        printf 'STATE_RUN=%q\n' "$RUN"
        printf 'STATE_BINDIR=%q\n' "$BINDIR"
        printf 'STATE_USER=%q\n' "$SERVER_USER"
        printf 'STATE_PORT=%q\n' "$PORT"
        printf 'STATE_ADMIN_PW=%q\n' "$ADMIN_PW"
        printf 'STATE_OWNER_PW=%q\n' "$OWNER_PW"
        printf 'STATE_JOB_PW=%q\n' "$JOB_PW"
    } >"$tmp"
    mv -f "$tmp" "$file"
}

load_state() {
    local file=$1
    [[ -f $file ]] || return 1
    # shellcheck disable=SC1090  # written by save_state, mode 0600
    source "$file"
    RUN=$STATE_RUN BINDIR=$STATE_BINDIR SERVER_USER=$STATE_USER PORT=$STATE_PORT
    ADMIN_PW=$STATE_ADMIN_PW OWNER_PW=$STATE_OWNER_PW JOB_PW=$STATE_JOB_PW
}

# Serialise start and stop on one DIR (make -j, two shells).
lock_dir() {
    exec 9>"$1/.lock"
    flock -w 120 9 || die "another pg_server.sh holds $1/.lock for over 2 minutes"
}

# --- one server ----------------------------------------------------------------------

pg_ctl_argv() {
    local bindir=$1 run=$2 user=$3
    as_user_prefix "$user"
    printf '%s\0' "$bindir/pg_ctl" -D "$run/data" -l "$run/server.log"
}

# The postmaster that `pg_ctl start` leaves running inherits every open descriptor but 0-2, which
# pg_ctl points at /dev/null and the log: the lock on DIR (so the next stop would wait for it), and
# whatever pipe the caller's caller reads to its end (so `make test | tee` would never finish).
run_pg_ctl() {
    local bindir=$1 run=$2 user=$3 argv=()
    shift 3
    mapfile -d '' argv < <(pg_ctl_argv "$bindir" "$run" "$user")
    (
        fds=(/proc/$BASHPID/fd/*)
        for fd in "${fds[@]##*/}"; do
            if (( fd > 2 )); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        exec "${argv[@]}" "$@"
    )
}

# Whether the postmaster of RUN lives. Not `pg_ctl status`: it counts a killed postmaster that
# nobody has reaped yet (a zombie; this machine's init reaps them late) as running, and `pg_ctl
# stop` then waits its whole timeout for it.
server_running() {
    local run=$1 pid state
    [[ -f $run/data/postmaster.pid ]] || return 1
    read -r pid <"$run/data/postmaster.pid" || return 1
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
    state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

server_accepting() {
    "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 10 >/dev/null 2>&1
}

kill_postmaster() {
    local run=$1 pid children
    read -r pid <"$run/data/postmaster.pid" || return 0
    note "the server in $run did not stop: killing its processes"
    children=$(pgrep -P "$pid" || true)
    # shellcheck disable=SC2086  # a list of process ids
    kill -KILL "$pid" $children 2>/dev/null || true
}

# Stop the server of one run directory (if any) and delete the directory.
discard_run() {
    local run=$1 bindir=$2 user
    if [[ -d $run/data && -n $bindir ]]; then
        user=$(stat -c %U "$run/data")
        if server_running "$run"; then
            if ! run_pg_ctl "$bindir" "$run" "$user" -w -t "$STOP_TIMEOUT" -m fast stop >/dev/null 2>&1; then
                note "the server in $run did not stop within ${STOP_TIMEOUT}s: stopping it with -m immediate"
                if ! run_pg_ctl "$bindir" "$run" "$user" -w -t 10 -m immediate stop >/dev/null 2>&1; then
                    # A postmaster that ignores even that (stopped, hung): the data goes anyway.
                    kill_postmaster "$run"
                fi
            fi
        fi
    fi
    rm -rf "$run"
}

log_tail() {
    local run=$1
    if [[ -s $run/server.log ]]; then
        printf -- '--- last lines of %s ---\n' "$run/server.log" >&2
        tail -n 30 "$run/server.log" >&2
        printf -- '---\n' >&2
    fi
}

# A free TCP port on 127.0.0.1 below the ephemeral range: the kernel never hands it to an
# outgoing connection (or to a test server bound to port 0) while a fault test has the server
# stopped, so `pg_ctl start` can take it back.
free_port() {
    local python
    python=$(command -v python3 || true)
    [[ -n $python ]] || die "python3 is needed to find a free port"
    "$python" - <<'EOF'
import random
import socket

with open('/proc/sys/net/ipv4/ip_local_port_range', encoding='ascii') as f:
    ephemeral_low = int(f.read().split()[0])
candidates = list(range(16000, min(ephemeral_low, 32768)))
random.shuffle(candidates)
for port in candidates[:200]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            continue
    print(port)
    break
else:
    raise SystemExit('no free port found on 127.0.0.1')
EOF
}

# URL-safe, so it goes into a URL unescaped.
random_password() {
    head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

write_config() {
    local run=$1 socket_dir=$1/socket
    # A Unix socket path longer than sun_path (107 bytes) stops postgres from starting. The socket
    # is unused anyway (pg_hba.conf admits no socket logins; pg_ctl -w reads postmaster.pid), so a
    # deep DIR only loses it.
    if (( ${#socket_dir} + 20 > 107 )); then
        socket_dir=
    fi
    as_user "$SERVER_USER" mkdir -m 0700 "$run/socket"
    as_user "$SERVER_USER" tee -a "$run/data/postgresql.conf" >/dev/null <<EOF

# --- tools/pg_server.sh ---
listen_addresses = '127.0.0.1'
include = 'port.conf'
unix_socket_directories = '$socket_dir'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
# 3 controllers x 20 forks, each with its connection, plus senders, tests and admin sessions.
max_connections = 300
# The data is thrown away after the run, so crash safety buys nothing and costs time: test only.
fsync = off
synchronous_commit = off
full_page_writes = off
# A failing statement would otherwise be logged with its text, e.g. a CREATE ROLE ... PASSWORD.
log_min_error_statement = panic
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    printf 'host all all 127.0.0.1/32 scram-sha-256\n' | as_user "$SERVER_USER" tee "$run/data/pg_hba.conf" >/dev/null
}

create_roles() {
    # Passwords go through stdin and PGPASSWORD (readable by root and this user only), never argv.
    PGPASSWORD=$ADMIN_PW PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PORT" -U "$ADMIN_ROLE" -d postgres >/dev/null <<EOF
CREATE ROLE $OWNER_ROLE LOGIN PASSWORD '$OWNER_PW';
-- PostgreSQL 15 grants PUBLIC only CONNECT and TEMPORARY on a database and nothing on schema
-- public, so this role can log in and use what it is granted, but not create schemas or tables.
CREATE ROLE $JOB_ROLE LOGIN PASSWORD '$JOB_PW';
CREATE DATABASE $DATABASE OWNER $OWNER_ROLE;
EOF
}

start_new_server() {
    local dir=$1 started_at=$SECONDS attempt pwfile version
    require_bindir
    require_server_user

    rm -f "$dir/failed-start.log"
    RUN=$(mktemp -d "$dir/run.XXXXXX")
    # From here on a failure leaves nothing running and no half-made directory behind.
    trap 'discard_run "$RUN" "$BINDIR"' EXIT
    chmod 0700 "$RUN"
    chown "$SERVER_USER:" "$RUN"
    as_user "$SERVER_USER" test -x "$RUN" \
        || die "$SERVER_USER cannot enter $RUN: every parent directory of $dir must be searchable by others (chmod o+x), or use another DIR"

    ADMIN_PW=$(random_password) OWNER_PW=$(random_password) JOB_PW=$(random_password)
    pwfile=$RUN/admin.pw
    # shellcheck disable=SC2016  # $1 is expanded by that inner sh
    printf '%s\n' "$ADMIN_PW" | as_user "$SERVER_USER" sh -c 'umask 077 && cat >"$1"' sh "$pwfile"
    # --no-sync and --no-locale: seconds faster, and C collation on every machine.
    if ! as_user "$SERVER_USER" "$BINDIR/initdb" -D "$RUN/data" -U "$ADMIN_ROLE" --pwfile="$pwfile" \
        --auth=scram-sha-256 --encoding=UTF8 --no-locale --no-sync --no-instructions >"$RUN/initdb.log" 2>&1; then
        tail -n 30 "$RUN/initdb.log" >&2
        die "initdb failed (output above)"
    fi
    rm -f "$pwfile" "$RUN/initdb.log"
    write_config "$RUN"

    for attempt in 1 2 3; do
        PORT=$(free_port)
        printf 'port = %s\n' "$PORT" | as_user "$SERVER_USER" tee "$RUN/data/port.conf" >/dev/null
        if run_pg_ctl "$BINDIR" "$RUN" "$SERVER_USER" -w -t "$START_TIMEOUT" start >/dev/null 2>&1; then
            break
        fi
        # Another process took the port between the check and the bind: pick another.
        if (( attempt < 3 )) && grep -q 'could not bind' "$RUN/server.log" 2>/dev/null; then
            as_user "$SERVER_USER" truncate -s 0 "$RUN/server.log"
            continue
        fi
        log_tail "$RUN"
        cp "$RUN/server.log" "$dir/failed-start.log" 2>/dev/null || true
        die "PostgreSQL did not start, or not within ${START_TIMEOUT}s (the end of its log is above, all of it in $dir/failed-start.log)"
    done

    if ! create_roles; then
        log_tail "$RUN"
        cp "$RUN/server.log" "$dir/failed-start.log" 2>/dev/null || true
        die "could not create the roles and the database (the end of the server log is above, all of it in $dir/failed-start.log)"
    fi
    save_state "$(state_file "$dir")"
    trap - EXIT
    version=$("$BINDIR/postgres" --version | awk '{print $3}')
    note "PostgreSQL $version ready on 127.0.0.1:$PORT in $((SECONDS - started_at))s (data: $RUN/data, as $SERVER_USER);" \
        "the URLs: tools/pg_server.sh env $dir"
}

# --- commands --------------------------------------------------------------------------

absolute_dir() {
    local dir=$1
    [[ -n $dir ]] || usage
    mkdir -p "$dir"
    (cd "$dir" && pwd -P)
}

cmd_start() {
    local dir run
    dir=$(absolute_dir "$1")
    lock_dir "$dir"
    if load_state "$(state_file "$dir")"; then
        if [[ -d $RUN ]] && server_running "$RUN" && server_accepting; then
            note "reusing the PostgreSQL server on 127.0.0.1:$PORT (data: $RUN/data)"
            return 0
        fi
        # A server stopped, killed or hung without `stop`: its data may be anything, start afresh.
        note "the server recorded in $dir is not running or not accepting connections: starting a new one"
        discard_run "$RUN" "$BINDIR"
        rm -f "$(state_file "$dir")"
    fi
    # Leftovers of a start that was killed before it recorded its state.
    for run in "$dir"/run.*; do
        [[ -d $run ]] && discard_run "$run" "$(find_bindir)"
    done
    start_new_server "$dir"
}

cmd_stop() {
    local dir=$1 run bindir
    [[ -n $dir ]] || usage
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd -P)
    lock_dir "$dir"
    bindir=$(find_bindir)
    if load_state "$(state_file "$dir")"; then
        bindir=$BINDIR
    fi
    for run in "$dir"/run.*; do
        [[ -d $run ]] && discard_run "$run" "$bindir"
    done
    rm -f "$(state_file "$dir")"
}

cmd_env() {
    local dir=$1 url_tail ctl=() word ctl_words=''
    [[ -n $dir && -d $dir ]] || die "no PostgreSQL test server in ${dir:-DIR}: run tools/pg_server.sh start ${dir:-DIR} first"
    dir=$(cd "$dir" && pwd -P)
    load_state "$(state_file "$dir")" || die "no PostgreSQL test server in $dir: run tools/pg_server.sh start $dir first"
    mapfile -d '' ctl < <(pg_ctl_argv "$BINDIR" "$RUN" "$SERVER_USER")
    ctl+=(-w -t "$START_TIMEOUT")
    for word in "${ctl[@]}"; do
        [[ $word =~ ^[A-Za-z0-9_./:@%+=,-]+$ ]] || die "cannot quote $word for TEMPERSTACK_TEST_PG_CTL: use a DIR whose path has only letters, digits and ._-/"
        ctl_words+="${ctl_words:+ }$word"
    done
    url_tail="@127.0.0.1:$PORT/$DATABASE"
    printf "export TEMPERSTACK_TEST_PG_URL='postgresql://%s:%s%s'\n" "$OWNER_ROLE" "$OWNER_PW" "$url_tail"
    printf "export TEMPERSTACK_TEST_PG_JOB_URL='postgresql://%s:%s%s'\n" "$JOB_ROLE" "$JOB_PW" "$url_tail"
    printf "export TEMPERSTACK_TEST_PG_ADMIN_URL='postgresql://%s:%s%s'\n" "$ADMIN_ROLE" "$ADMIN_PW" "$url_tail"
    printf "export TEMPERSTACK_TEST_PG_DATA='%s'\n" "$RUN/data"
    printf "export TEMPERSTACK_TEST_PG_LOG='%s'\n" "$RUN/server.log"
    printf "export TEMPERSTACK_TEST_PG_CTL='%s'\n" "$ctl_words"
}

cmd_status() {
    local dir=$1
    [[ -n $dir ]] || usage
    if [[ -d $dir ]] && load_state "$(state_file "$(cd "$dir" && pwd -P)")" && server_running "$RUN"; then
        printf 'running on 127.0.0.1:%s (data: %s)\n' "$PORT" "$RUN/data"
        return 0
    fi
    printf 'not running\n'
    return 3
}

main() {
    [[ $# -eq 2 ]] || usage
    umask 022
    case $1 in
        start) cmd_start "$2" ;;
        stop) cmd_stop "$2" ;;
        env) cmd_env "$2" ;;
        status) cmd_status "$2" ;;
        *) usage ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
