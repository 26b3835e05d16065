# shellcheck shell=bash
#
# Helpers shared by scripts/test and scripts/demo. Source this file; it defines functions only.
#
#   rr_install_deps                     Debian packages + a `swift` on PATH
#   rr_free_port                        a currently free TCP port on 127.0.0.1
#   rr_pg_bindir                        the newest /usr/lib/postgresql/<v>/bin
#   rr_pg_start_cluster NAME BASEDIR    initdb + start BASEDIR/NAME on 127.0.0.1; echoes the port
#   rr_pg_stop_all BASEDIR              stop every cluster under BASEDIR, then rm -rf BASEDIR
#   rr_kill_session TOKEN               kill the processes that carry RR_SCRIPT_SESSION=TOKEN
#
# Everything runs as root; Postgres refuses root, so initdb and pg_ctl run as `postgres`
# through runuser. Servers listen on 127.0.0.1 only, with their unix sockets in BASEDIR.
# Messages go to stderr; only results (a port, a path) go to stdout.

# prometheus: promtool and a real server for the metrics tests; systemd: systemd-analyze for the unit tests;
# openssl: the certificates of the Postgres- and Kafka-over-TLS tests; stunnel4: the TLS listener in
# front of the Kafka TLS tests' broker.
RR_DEB_PACKAGES=(librdkafka-dev libpq-dev postgresql postgresql-contrib kcat python3-venv prometheus systemd openssl stunnel4)

rr_log() { printf '%s\n' "$*" >&2; }
rr_die() { printf 'error: %s\n' "$*" >&2; return 1; }

# Makes sure the Debian packages the build and the tests need are installed, and that
# `swift` is on PATH. apt is not touched when everything is already there.
rr_install_deps() {
    local dir
    if ! command -v swift >/dev/null 2>&1; then
        for dir in /opt/swift/usr/bin /opt/swift/bin; do
            if [[ -x "$dir/swift" ]]; then
                export PATH="$dir:$PATH"
                break
            fi
        done
    fi
    if ! command -v swift >/dev/null 2>&1; then
        rr_die "no 'swift' on PATH (also looked in /opt/swift/usr/bin and /opt/swift/bin). Install a Swift 6 toolchain for Debian 12 from https://www.swift.org/install/ and put its usr/bin on PATH."
        return 1
    fi

    local pkg missing=()
    for pkg in "${RR_DEB_PACKAGES[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        rr_log "   all Debian packages present (${RR_DEB_PACKAGES[*]})"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        rr_die "missing Debian packages: ${missing[*]}; run as root or install them: apt-get install -y ${missing[*]}"
        return 1
    fi
    rr_log "   installing: ${missing[*]}"
    if [[ -z "${RR_APT_UPDATED:-}" ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q ||
            { rr_die "apt-get update failed"; return 1; }
        RR_APT_UPDATED=1
    fi
    # Packages must not start their services (Prometheus would listen on all interfaces):
    # a temporary policy-rc.d refuses every service start during the install.
    local policy_added=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_added=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        { [[ -n "$policy_added" ]] && rm -f /usr/sbin/policy-rc.d; rr_die "apt-get install ${missing[*]} failed"; return 1; }
    [[ -n "$policy_added" ]] && rm -f /usr/sbin/policy-rc.d
    return 0
}

# Prints a TCP port that is free on 127.0.0.1 right now (the kernel's choice for port 0).
rr_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' && return 0
    fi
    # Fallback without python3: random ports until one refuses a connection.
    local port i
    for i in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    rr_die "could not find a free TCP port on 127.0.0.1 (tried $i)"
}

# Prints the bin directory of the newest PostgreSQL installed from Debian's packages.
rr_pg_bindir() {
    local version
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null |
        grep -E '^[0-9]+(\.[0-9]+)?$' | sort -V | tail -n 1)
    if [[ -z "$version" || ! -x "/usr/lib/postgresql/$version/bin/initdb" ]]; then
        rr_die "no PostgreSQL server under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        return 1
    fi
    echo "/usr/lib/postgresql/$version/bin"
}

# Runs a command as the postgres user from a directory that user can read.
rr_as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

# rr_pg_start_cluster NAME BASEDIR
# Creates BASEDIR/NAME with initdb (trust auth, superuser `postgres`, UTF8), configures it to
# listen on 127.0.0.1:<a free port> with its unix socket in BASEDIR, starts it and prints the
# port. The settings live in the cluster's postgresql.conf, so a plain
#   runuser -u postgres -- pg_ctl -D BASEDIR/NAME -l BASEDIR/NAME/server.log -w start
# later brings it back on the same port.
rr_pg_start_cluster() {
    local name=${1:?usage: rr_pg_start_cluster NAME BASEDIR} basedir=${2:?usage: rr_pg_start_cluster NAME BASEDIR}
    local bindir datadir locale port attempt
    bindir=$(rr_pg_bindir) || return 1
    id postgres >/dev/null 2>&1 || { rr_die "no 'postgres' user (apt-get install postgresql)"; return 1; }

    mkdir -p "$basedir"
    basedir=$(cd "$basedir" && pwd -P)
    chown postgres: "$basedir"
    chmod 0755 "$basedir"
    if ! rr_as_postgres test -w "$basedir" -a -x "$basedir"; then
        rr_die "user postgres cannot write to $basedir (is a parent directory closed to it? mktemp -d makes 0700 directories)"
        return 1
    fi
    if ((${#basedir} > 80)); then
        rr_die "$basedir is too long to hold a unix socket path (max ~80 characters); use a shorter base directory"
        return 1
    fi
    datadir="$basedir/$name"
    if [[ -e "$datadir" ]]; then
        rr_die "$datadir already exists"
        return 1
    fi

    locale=C.UTF-8
    if ! grep -qixE 'c\.utf-?8' <<<"$(locale -a 2>/dev/null || true)"; then
        locale=C
    fi
    if ! rr_as_postgres "$bindir/initdb" -D "$datadir" --auth=trust -U postgres \
        --encoding=UTF8 --locale="$locale" >"$basedir/initdb-$name.log" 2>&1; then
        cat "$basedir/initdb-$name.log" >&2
        rr_die "initdb of $datadir failed"
        return 1
    fi

    # A port picked now could be taken before the server binds it; retry with another.
    for attempt in 1 2 3; do
        port=$(rr_free_port) || return 1
        cat >>"$datadir/postgresql.conf" <<EOF

# --- added by scripts/lib/postgres.sh (cluster '$name', attempt $attempt) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$basedir'
fsync = off
full_page_writes = off
max_connections = 100
shared_buffers = 64MB
# Logical decoding for capture (its tests stream replication slots). Measured: the same WAL
# volume and, within the noise, the same time as the default 'replica' for this suite's writes.
wal_level = logical
EOF
        if rr_as_postgres "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 start >/dev/null; then
            echo "$port"
            return 0
        fi
        if ! grep -q 'could not bind\|could not create lock file\|Address already in use' "$datadir/server.log" 2>/dev/null; then
            break
        fi
        rr_log "   port $port was taken; retrying cluster $name on another port"
    done
    tail -n 20 "$datadir/server.log" >&2 2>/dev/null || true
    rr_die "could not start the Postgres cluster $datadir (log: $datadir/server.log)"
}

# rr_pg_stop_all BASEDIR
# Immediate stop of every cluster under BASEDIR (errors ignored), then removes BASEDIR.
rr_pg_stop_all() {
    local basedir=${1:-} bindir datadir pid
    if [[ -z "$basedir" || "$basedir" == "/" || ! -d "$basedir" ]]; then
        return 0
    fi
    bindir=$(rr_pg_bindir 2>/dev/null) || bindir=""
    for datadir in "$basedir"/*/; do
        datadir=${datadir%/}
        [[ -f "$datadir/PG_VERSION" ]] || continue
        if [[ -n "$bindir" ]]; then
            rr_as_postgres "$bindir/pg_ctl" -D "$datadir" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        fi
        # A postmaster pg_ctl could not stop: SIGQUIT is Postgres's immediate shutdown.
        if [[ -f "$datadir/postmaster.pid" ]]; then
            pid=$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)
            if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
                kill -QUIT "$pid" 2>/dev/null || true
                sleep 1
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    done
    rm -rf "$basedir"
}

# rr_kill_session TOKEN
# Sends SIGTERM, then after up to 5 s SIGKILL, to every process whose environment holds
# RR_SCRIPT_SESSION=TOKEN, i.e. every process the calling script started (directly or not)
# after exporting that variable, even those re-parented to init. The caller is spared.
rr_kill_session() {
    local token=${1:-} pids pid i
    [[ -n "$token" ]] || return 0
    _rr_session_pids() {
        local f p
        for f in /proc/[0-9]*/environ; do
            p=${f#/proc/}
            p=${p%/environ}
            [[ "$p" == "$$" || "$p" == "$BASHPID" ]] && continue
            grep -qzxF "RR_SCRIPT_SESSION=$token" "$f" 2>/dev/null && echo "$p"
        done
        return 0
    }
    pids=$(_rr_session_pids)
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086 # word splitting of the pid list is intended
    kill -TERM $pids 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(_rr_session_pids)
        [[ -n "$pids" ]] || return 0
        sleep 0.5
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}
