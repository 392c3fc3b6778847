#!/usr/bin/env bash
# slurm-local.sh -- a real, single-node SLURM cluster (with accounting) on this
# Debian machine, for tests and local development.
#
#   bash slurm/cluster/slurm-local.sh up      # install if needed, start, wait until usable
#   bash slurm/cluster/slurm-local.sh down    # stop every daemon this script starts
#   bash slurm/cluster/slurm-local.sh status  # short summary; exit 0 only if healthy
#
# Jobs go to partition "debug" (the default partition). Clients need no
# environment variables: the config lives where Debian's slurm looks for it
# (/etc/slurm/slurm.conf).
#
# Design notes (the "why"):
# * CI machines and dev containers have no systemd (PID 1 is something else), so
#   every daemon is started directly, detached from the caller's terminal and
#   pipes, and tracked through its pid file. `down` only signals pids from those
#   pid files, never processes matched by name.
# * MariaDB runs as a private instance (own datadir, socket and TCP port under
#   $BASE) so it neither depends on nor disturbs a system-wide MySQL/MariaDB.
# * Accounting (slurmdbd + MariaDB) is set up because submitit and the tests use
#   `sacct` to learn job states; without it job states vanish from slurmctld
#   after MinJobAge and submitit falls back to guessing.
# * `up` is idempotent: if everything already answers, it returns within a
#   fraction of a second; otherwise it (re)starts only what is missing.
#
# Environment knobs (all optional):
#   SLURM_LOCAL_DIR      state/log/db directory        (default /var/lib/slurm-local)
#   SLURM_LOCAL_TIMEOUT  seconds to wait for each step (default 120)
#   SLURM_LOCAL_DB_PORT  TCP port of the private MariaDB (default 3307)

set -euo pipefail

# CI may run us with a minimal PATH; the daemons live in sbin.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
# Make sure all tool output (sinfo states, dates) is in a parseable, stable form.
export LC_ALL=C
# A caller's SLURM_CONF pointing elsewhere would make our checks talk to
# another cluster.
unset SLURM_CONF

readonly BASE="${SLURM_LOCAL_DIR:-/var/lib/slurm-local}"
readonly TIMEOUT="${SLURM_LOCAL_TIMEOUT:-120}"
readonly DB_PORT="${SLURM_LOCAL_DB_PORT:-3307}"

readonly CLUSTER=localcluster
readonly PARTITION=debug
# Minimal images may lack the hostname binary; uname -n is the same name.
NODE="$(hostname -s 2>/dev/null || uname -n)"
readonly NODE="${NODE%%.*}"

readonly SLURM_CONF_FILE=/etc/slurm/slurm.conf
readonly DBD_CONF_FILE=/etc/slurm/slurmdbd.conf

readonly STATE_DIR="$BASE/state"     # slurmctld StateSaveLocation
readonly SPOOL_DIR="$BASE/spool"     # slurmd SlurmdSpoolDir
readonly LOG_DIR="$BASE/log"
readonly RUN_DIR="$BASE/run"         # slurm pid files
readonly DB_DIR="$BASE/mysql/data"
readonly DB_RUN="$BASE/mysql/run"    # must be writable by the mysql user
readonly DB_SOCK="$DB_RUN/mysqld.sock"
readonly DB_PID="$DB_RUN/mysqld.pid"
readonly DB_LOG="$LOG_DIR/mariadb.log"
readonly DB_PASS_FILE="$BASE/slurmdbd.dbpass"

readonly SLURMCTLD_PID="$RUN_DIR/slurmctld.pid"
readonly SLURMD_PID="$RUN_DIR/slurmd.pid"
readonly SLURMDBD_PID="$RUN_DIR/slurmdbd.pid"
readonly SLURMCTLD_LOG="$LOG_DIR/slurmctld.log"
readonly SLURMD_LOG="$LOG_DIR/slurmd.log"
readonly SLURMDBD_LOG="$LOG_DIR/slurmdbd.log"

# Debian's munge paths are kept: slurm's auth/munge plugin talks to the default
# socket, so moving it would need AuthInfo in every client's config.
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_RUN=/run/munge
readonly MUNGE_PID="$MUNGE_RUN/munged.pid"
readonly MUNGE_LOG=/var/log/munge/munged.log

readonly PACKAGES=(munge mariadb-server slurm-wlm slurmctld slurmd slurm-client slurmdbd)

# ---------------------------------------------------------------- helpers ---

elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

log() { printf '[slurm-local] %s\n' "$*" >&2; }

# Print the last lines of the given logs so a CI failure explains itself.
show_logs() {
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then
            printf '\n----- last 30 lines of %s -----\n' "$f" >&2
            tail -n 30 "$f" >&2 || true
        else
            printf '\n----- %s: missing or empty -----\n' "$f" >&2
        fi
    done
}

die() {
    local msg="$1"; shift
    printf '[slurm-local] ERROR: %s\n' "$msg" >&2
    [[ $# -gt 0 ]] && show_logs "$@"
    exit 1
}

# proc_running <pid>: exists and is not a zombie. Without a real init a dead
# daemon can linger as a zombie for a second or more (nobody reaps it
# promptly), and kill -0 still succeeds on zombies.
proc_running() {
    local state
    state="$(sed -n 's/^.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != [ZX] ]]
}

# True if the pid in <pidfile> is running *and* is the expected program: pid
# files survive a machine restart or a crash, and pids get reused.
pid_alive() {
    local name="$1" pidfile="$2" pid
    [[ -r "$pidfile" ]] || return 1
    pid="$(pid_of "$pidfile")"
    [[ -n "$pid" ]] && proc_running "$pid" || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]]
}

pid_of() { tr -dc '0-9' <"$1" 2>/dev/null || true; }

# Daemons outlive this script. One that inherited a pipe the caller reads (CI
# harness, make, "$(...)") would keep the caller waiting for EOF forever, and
# one that inherited fd 9 would hold our lock forever. So they get stdin from
# /dev/null, stdout/stderr as redirected by the caller (a log file), and no
# other inherited descriptor.
close_inherited_fds() {
    local fd
    for fd in /proc/self/fd/*; do
        fd="${fd##*/}"
        if ((fd > 2)); then
            eval "exec ${fd}>&-" 2>/dev/null || true
        fi
    done
}

# detached <cmd...>: run a self-daemonizing program; returns its exit status.
detached() {
    (close_inherited_fds; exec "$@" </dev/null)
}

# detached_bg <cmd...>: start a program that stays in the foreground, in the
# background. Exactly one fork, which then execs: a wrapper shell left waiting
# on the daemon would keep the descriptors open.
detached_bg() {
    (close_inherited_fds; exec setsid "$@" </dev/null) &
    disown || true
}

# wait_for <description> [--alive <name> <pidfile>] <command...>: poll until
# the command succeeds. With --alive, give up as soon as the daemon has died
# (after a short grace period for it to fork and write its pid file) instead
# of sitting out the whole timeout.
wait_for() {
    local what="$1"; shift
    local name="" pidfile=""
    if [[ "${1:-}" == --alive ]]; then
        name="$2" pidfile="$3"
        shift 3
    fi
    local start=$SECONDS deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "$what: no answer after ${TIMEOUT}s"
            return 1
        fi
        if [[ -n "$name" ]] && ((SECONDS - start >= 3)) && ! pid_alive "$name" "$pidfile"; then
            log "$what: $name exited during startup"
            return 1
        fi
        sleep 0.2
    done
    log "$what: ok"
}

# Replace <file> with stdin only if the content differs, so an unchanged
# config does not force daemon restarts. Returns 0 if the file changed.
install_if_changed() {
    local file="$1" mode="$2" owner="$3" tmp
    tmp="$(mktemp "${file}.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -f "$file" ]] && cmp -s "$tmp" "$file" \
        && [[ "$(stat -c '%a %U' "$file")" == "$mode ${owner%%:*}" ]]; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# Would install_if_changed change anything? (used by the fast path)
differs() {
    local file="$1" mode="$2" owner="$3" new
    # Always drain stdin: returning early would SIGPIPE the generator, and
    # pipefail would turn that into a bogus answer.
    new="$(cat; echo x)"
    [[ -f "$file" ]] || return 0
    [[ "$(stat -c '%a %U' "$file")" == "$mode ${owner%%:*}" ]] || return 0
    [[ "$new" != "$(cat "$file"; echo x)" ]]
}

require_root() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (it installs packages and starts system daemons)"
}

# Serialize up/down: CI and "make slurm-up" may race, and two concurrent
# starts would fight over the same pid files and ports.
take_lock() {
    local lockfile=/run/lock/slurm-local.lock
    [[ -d /run/lock ]] || lockfile=/tmp/slurm-local.lock
    exec 9>"$lockfile"
    flock -w 300 9 || die "another slurm-local.sh has held $lockfile for 300s"
}

# --------------------------------------------------------------- install ---

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0

    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package maintainer scripts would otherwise try to start munge/mariadb
    # through init scripts or systemd (absent here); we start everything
    # ourselves with our own configs. Only add the blocker if none exists, and
    # always remove what we added.
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi

    local apt_log="$LOG_DIR/apt.log"
    local apt_opts=(-y -q --no-install-recommends
        -o DPkg::Lock::Timeout=300
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

    # `apt-get update` costs time and network, so only run it when the package
    # lists are empty (fresh image) or stale (install fails on a 404).
    # apt's progress output would bury the useful lines of a CI log; it goes
    # to a file that is shown only if the install fails.
    local candidate
    for p in "${missing[@]}"; do
        candidate="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
        if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
            log "package lists lack $p; running apt-get update"
            apt-get update -q -o DPkg::Lock::Timeout=300 >>"$apt_log" 2>&1 || true
            break
        fi
    done
    if ! apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$apt_log" 2>&1; then
        log "install failed; refreshing package lists and retrying once"
        apt-get update -q -o DPkg::Lock::Timeout=300 >>"$apt_log" 2>&1 || true
        apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$apt_log" 2>&1 \
            || die "apt-get install ${missing[*]} failed" "$apt_log"
    fi
    log "installed (log: $apt_log)"

    if ((added_policy)); then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
}

# ---------------------------------------------------------------- munge -----

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
    # Debian creates the key at install time, but an image built with the
    # package preinstalled and the key stripped must still work.
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating munge key"
        install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"

    munge_ok && return 0

    # /run is a tmpfs; without systemd-tmpfiles nobody recreates this dir.
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    if ! pid_alive munged "$MUNGE_PID"; then
        log "starting munged"
        rm -f "$MUNGE_PID"
        # munged refuses to run as root and daemonizes itself; detach its
        # stdio so callers that capture our output (CI) are not kept waiting.
        detached runuser -u munge -- munged >>"$LOG_DIR/munged.stdout" 2>&1 \
            || die "munged failed to start" "$LOG_DIR/munged.stdout" "$MUNGE_LOG"
    fi
    wait_for "munge" --alive munged "$MUNGE_PID" munge_ok || die "munge does not answer" "$MUNGE_LOG"
}

# -------------------------------------------------------------- mariadb -----

db_sql() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCK" -uroot; }
db_ok() { mariadb-admin --no-defaults --protocol=socket --socket="$DB_SOCK" -uroot ping; }

ensure_mariadb() {
    install -d -o mysql -g mysql -m 0750 "$BASE/mysql" "$DB_DIR" "$DB_RUN"
    touch "$DB_LOG" && chown mysql:mysql "$DB_LOG"

    if ! db_ok >/dev/null 2>&1; then
        if [[ ! -d "$DB_DIR/mysql" ]]; then
            log "initializing MariaDB datadir $DB_DIR"
            # Root authenticates through the unix socket (we are root), so no
            # root password has to be stored anywhere.
            mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" \
                --auth-root-authentication-method=socket --skip-test-db \
                >>"$DB_LOG" 2>&1 \
                || { rm -rf "${DB_DIR:?}"/*; die "mariadb-install-db failed" "$DB_LOG"; }
        fi
        if ! pid_alive mariadbd "$DB_PID"; then
            log "starting mariadbd (127.0.0.1:$DB_PORT)"
            rm -f "$DB_PID" "$DB_SOCK"
            # --no-defaults: keep Debian's /etc/mysql config (socket, port,
            # datadir of the system instance) out of our private instance.
            # The InnoDB sizes are the ones slurmdbd checks for (it logs an
            # error otherwise); memory is only touched as the tiny DB grows.
            detached_bg mariadbd --no-defaults --user=mysql \
                --datadir="$DB_DIR" --socket="$DB_SOCK" --pid-file="$DB_PID" \
                --port="$DB_PORT" --bind-address=127.0.0.1 \
                --log-error="$DB_LOG" \
                --innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 \
                --max-allowed-packet=64M \
                >>"$DB_LOG" 2>&1
        fi
        wait_for "mariadb" --alive mariadbd "$DB_PID" db_ok || die "MariaDB did not come up" "$DB_LOG"
    fi

    # The password only has to be shared between MariaDB and slurmdbd.conf,
    # so generate it once and keep it root-only.
    if [[ ! -s "$DB_PASS_FILE" ]]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$DB_PASS_FILE")
    fi
    chmod 600 "$DB_PASS_FILE"
    local pw; pw="$(cat "$DB_PASS_FILE")"
    # Idempotent; both host spellings because the server may or may not
    # resolve 127.0.0.1 back to "localhost".
    db_sql <<SQL || die "could not create the slurm database/user" "$DB_LOG"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

# -------------------------------------------------------------- configs -----

real_memory_mb() {
    # Slightly below the machine's memory: slurmd drains a node whose
    # detected memory is lower than the configured RealMemory.
    awk '/^MemTotal:/ { printf "%d\n", $2 / 1024 * 0.9 }' /proc/meminfo
}

gen_slurm_conf() {
    cat <<EOF
# Generated by slurm/cluster/slurm-local.sh -- edits are overwritten by "up".
ClusterName=$CLUSTER
# 127.0.0.1 so nothing depends on this host's name resolving.
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also delays the restart of a requeued job (default 120 s); tests
# requeue tasks, so keep it short while leaving slack for a loaded CI box.
AuthInfo=cred_expire=10
CryptoType=crypto/munge
MpiDefault=none
# No mail relay here; the default (/bin/mail) does not exist.
MailProg=/bin/true
SwitchType=switch/none

StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$SLURMCTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info

# No cgroup plumbing in containers/VMs without systemd: track processes by
# parentage and do no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30

# Each CPU is a separately allocatable unit and memory is not consumable, so
# several 1-CPU tasks (submitit array tasks) run side by side.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Schedule on submit and re-test pending jobs every couple of seconds instead of
# the default minute, so tests do not wait on the scheduler.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1,default_queue_depth=1000

# Tests requeue array tasks with "scontrol requeue".
JobRequeue=1
MaxArraySize=10001
MaxJobCount=100000
# Short timeouts so cancellations and time limits do not slow tests. Finished
# jobs leave slurmctld's memory (squeue/scontrol) after MinJobAge; sacct keeps
# them. 30 s still leaves a window to "scontrol requeue" a just-finished task.
KillWait=2
MinJobAge=30
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
# A node that was DOWN (e.g. slurmd restarted) comes back by itself.
ReturnToService=2

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$(real_memory_mb) State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

gen_dbd_conf() {
    cat <<EOF
# Generated by slurm/cluster/slurm-local.sh -- edits are overwritten by "up".
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$SLURMDBD_LOG
PidFile=$SLURMDBD_PID
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DB_PASS_FILE" 2>/dev/null || true)
StorageLoc=slurm_acct_db
EOF
}

configs_current() {
    gen_slurm_conf | differs "$SLURM_CONF_FILE" 644 root:root && return 1
    gen_dbd_conf | differs "$DBD_CONF_FILE" 600 root:root && return 1
    return 0
}

# ------------------------------------------------------------ slurm daemons --

slurmctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
dbd_ok() { sacctmgr -n -P list cluster format=Cluster >/dev/null 2>&1; }
sacct_ok() { sacct -n -X -a -o JobID -S now-1minutes >/dev/null 2>&1; }
node_state() { sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n 1; }
node_ready() { [[ "$(node_state)" =~ ^(idle|mix|alloc|comp)$ ]]; }
# slurmd_registered_since <epoch>: the node's SlurmdStartTime (set when slurmd
# registers) is not older than <epoch> (second resolution, hence the slack).
slurmd_registered_since() {
    local since="$1" t
    ((since > 0)) || return 0
    t="$(scontrol show node "$NODE" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')"
    [[ -n "$t" && "$t" != None ]] || return 1
    t="$(date -d "$t" +%s 2>/dev/null)" || return 1
    ((t >= since - 1))
}

# stop_pid <name> <pidfile>: TERM, give it time to save state, then KILL.
stop_pid() {
    local name="$1" pidfile="$2" pid i
    if ! pid_alive "$name" "$pidfile"; then
        log "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    pid="$(pid_of "$pidfile")"
    local t0=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        proc_running "$pid" || break
        sleep 0.2
    done
    if proc_running "$pid"; then
        log "$name (pid $pid) ignored SIGTERM for 30s; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "$name: stopped (pid $pid, $((SECONDS - t0))s)"
}

# start_daemon <name> <pidfile> <log>: slurm daemons fork into the background
# themselves; the parent's exit status only covers config parsing.
start_daemon() {
    local name="$1" pidfile="$2" logfile="$3"
    log "starting $name"
    rm -f "$pidfile"
    detached "$name" >>"$LOG_DIR/$name.stdout" 2>&1 \
        || die "$name failed to start" "$LOG_DIR/$name.stdout" "$logfile"
}

ensure_slurmdbd() {
    local restart="$1"
    if [[ "$restart" == 1 ]] && pid_alive slurmdbd "$SLURMDBD_PID"; then
        log "slurmdbd.conf changed; restarting slurmdbd"
        stop_pid slurmdbd "$SLURMDBD_PID"
    fi
    if ! pid_alive slurmdbd "$SLURMDBD_PID"; then
        start_daemon slurmdbd "$SLURMDBD_PID" "$SLURMDBD_LOG"
    fi
    # The first start creates all tables, which takes a few seconds.
    wait_for "slurmdbd" --alive slurmdbd "$SLURMDBD_PID" dbd_ok || die "slurmdbd does not answer" "$SLURMDBD_LOG" "$DB_LOG"

    # slurmctld must find its cluster in the database to record jobs.
    if ! sacctmgr -n -P list cluster format=Cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in accounting"
        sacctmgr -i add cluster "$CLUSTER" >&2 || die "sacctmgr add cluster failed" "$SLURMDBD_LOG"
    fi
    # Adding a cluster normally creates the root account and association; make
    # sure they exist so root's jobs are always accepted and accounted.
    if ! sacctmgr -n -P list account root format=Account 2>/dev/null | grep -qx root; then
        sacctmgr -i add account root cluster="$CLUSTER" >&2 || die "sacctmgr add account failed" "$SLURMDBD_LOG"
    fi
    if ! sacctmgr -n -P list assoc cluster="$CLUSTER" user=root format=User 2>/dev/null | grep -qx root; then
        sacctmgr -i add user root account=root cluster="$CLUSTER" >&2 || die "sacctmgr add user failed" "$SLURMDBD_LOG"
    fi
}

ensure_slurmctld() {
    local restart="$1"
    if [[ "$restart" == 1 ]] && pid_alive slurmctld "$SLURMCTLD_PID"; then
        log "slurm.conf changed; restarting slurmctld"
        stop_pid slurmctld "$SLURMCTLD_PID"
    fi
    if ! pid_alive slurmctld "$SLURMCTLD_PID"; then
        start_daemon slurmctld "$SLURMCTLD_PID" "$SLURMCTLD_LOG"
    fi
    wait_for "slurmctld" --alive slurmctld "$SLURMCTLD_PID" slurmctld_ok || die "slurmctld does not answer" "$SLURMCTLD_LOG"
}

ensure_slurmd() {
    local restart="$1"
    if [[ "$restart" == 1 ]] && pid_alive slurmd "$SLURMD_PID"; then
        log "slurm.conf changed; restarting slurmd"
        stop_pid slurmd "$SLURMD_PID"
    fi
    local started_at=0
    if ! pid_alive slurmd "$SLURMD_PID"; then
        started_at="$(date +%s)"
        start_daemon slurmd "$SLURMD_PID" "$SLURMD_LOG"
    fi

    # slurmctld restores the node as "idle" from its state files before the
    # new slurmd has registered; a job dispatched in that window fails to
    # launch. So a freshly started slurmd must also have registered.
    local deadline=$((SECONDS + TIMEOUT)) resumed=0 state
    while ! { node_ready && slurmd_registered_since "$started_at"; }; do
        state="$(node_state)"
        # A plain down/drain (no "*": slurmd answers) is left over from an
        # earlier run, e.g. killed jobs; slurmd is healthy now, so resume once.
        if ((resumed == 0)) && [[ "$state" =~ ^(down|drain|drng|fail)$ ]]; then
            log "node $NODE is $state; resuming it"
            scontrol update NodeName="$NODE" State=RESUME >&2 || true
            resumed=1
        fi
        if ((SECONDS >= deadline)); then
            scontrol show node "$NODE" >&2 || true
            die "node $NODE is '${state:-unknown}', not idle, after ${TIMEOUT}s" "$SLURMD_LOG" "$SLURMCTLD_LOG"
        fi
        if ((started_at > 0)) && (($(date +%s) - started_at >= 3)) && ! pid_alive slurmd "$SLURMD_PID"; then
            die "slurmd exited during startup" "$LOG_DIR/slurmd.stdout" "$SLURMD_LOG"
        fi
        sleep 0.2
    done
    log "node $NODE: $(node_state)"
}

# ---------------------------------------------------------- subcommands -----

healthy() {
    # The pid checks matter: after slurmd dies the node still reads "idle"
    # until SlurmdTimeout expires.
    configs_current \
        && pid_alive munged "$MUNGE_PID" && pid_alive mariadbd "$DB_PID" \
        && pid_alive slurmdbd "$SLURMDBD_PID" && pid_alive slurmctld "$SLURMCTLD_PID" \
        && pid_alive slurmd "$SLURMD_PID" \
        && munge_ok && db_ok >/dev/null 2>&1 && slurmctld_ok && node_ready && sacct_ok
}

cmd_up() {
    require_root
    take_lock
    local t0=$EPOCHREALTIME
    # Fast path: nothing to install, configs unchanged, everything answering.
    if command -v slurmctld >/dev/null 2>&1 && healthy; then
        log "already up (node $NODE $(node_state), partition $PARTITION, sacct ok)"
        return 0
    fi

    install -d -m 0755 "$BASE" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR" /etc/slurm
    install_packages

    ensure_munge
    ensure_mariadb

    local dbd_changed=0 conf_changed=0
    gen_dbd_conf | install_if_changed "$DBD_CONF_FILE" 600 root:root && dbd_changed=1
    gen_slurm_conf | install_if_changed "$SLURM_CONF_FILE" 644 root:root && conf_changed=1

    ensure_slurmdbd "$dbd_changed"
    ensure_slurmctld "$conf_changed"
    ensure_slurmd "$conf_changed"

    wait_for "sacct" sacct_ok || die "sacct does not work" "$SLURMDBD_LOG" "$SLURMCTLD_LOG"
    log "up in $(elapsed_since "$t0")s: node $NODE, partition $PARTITION, cluster $CLUSTER"
}

cmd_down() {
    require_root
    take_lock
    # Reverse dependency order: slurmctld flushes pending accounting records
    # to slurmdbd on shutdown, and slurmdbd needs MariaDB for that.
    # Each daemon takes 1-2 s to exit, so independent ones stop in parallel.
    stop_pid slurmd "$SLURMD_PID" &
    stop_pid slurmctld "$SLURMCTLD_PID" &
    wait
    stop_pid slurmdbd "$SLURMDBD_PID"
    stop_pid mariadbd "$DB_PID" &
    stop_pid munged "$MUNGE_PID" &
    wait
}

cmd_status() {
    local name pidfile ok=0
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        case "$name" in
            munged) pidfile="$MUNGE_PID" ;;
            mariadbd) pidfile="$DB_PID" ;;
            slurmdbd) pidfile="$SLURMDBD_PID" ;;
            slurmctld) pidfile="$SLURMCTLD_PID" ;;
            slurmd) pidfile="$SLURMD_PID" ;;
        esac
        if pid_alive "$name" "$pidfile"; then
            printf '%-10s running (pid %s)\n' "$name" "$(pid_of "$pidfile")"
        else
            printf '%-10s stopped\n' "$name"
            ok=1
        fi
    done
    if command -v sinfo >/dev/null 2>&1 && slurmctld_ok; then
        sinfo
    else
        echo "sinfo: slurmctld not reachable"
        ok=1
    fi
    if command -v sacct >/dev/null 2>&1 && sacct_ok; then
        echo "sacct: works"
    else
        echo "sacct: NOT working"
        ok=1
    fi
    return "$ok"
}

usage() {
    echo "usage: $0 {up|down|status}" >&2
    exit 2
}

main() {
    [[ $# -eq 1 ]] || usage
    case "$1" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        *) usage ;;
    esac
}

main "$@"
