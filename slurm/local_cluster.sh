#!/usr/bin/env bash
# Single-node SLURM cluster on localhost, for tests and for trying the
# and_plugin -> submitit -> SLURM flow without a real cluster.
#
# Usage: bash slurm/local_cluster.sh {install|start|stop|restart|status|logs}
#
# Designed for a root shell in a container without systemd (Debian bookworm):
# daemons are launched directly (munged, mariadbd, slurmdbd, slurmctld,
# slurmd) and tracked through their pid files. See slurm/README.md.
set -euo pipefail

# ----------------------------------------------------------------------------
# Settings (override through the environment)
# ----------------------------------------------------------------------------
CLUSTER_NAME="${AND_SLURM_CLUSTER_NAME:-andlocal}"
PARTITION="${AND_SLURM_PARTITION:-debug}"
# 1: run slurmdbd + MariaDB so that `sacct` works (submitit polls job states
# with sacct). 0: no accounting (sacct fails; submitit still gets results by
# reading its result files but job.state stays UNKNOWN).
ACCOUNTING="${AND_SLURM_ACCOUNTING:-1}"
# Memory kept out of the node's RealMemory (MiB); default max(1024, 10%).
MEM_HEADROOM_MB="${AND_SLURM_MEM_HEADROOM_MB:-}"
START_TIMEOUT="${AND_SLURM_START_TIMEOUT:-90}"
# How long a requeued job waits before it may start again (Slurm's default is
# 120 s, which makes checkpoint/requeue tests crawl).
CRED_EXPIRE="${AND_SLURM_CRED_EXPIRE:-10}"
# How long `install` waits for another apt/dpkg process (unattended upgrades,
# another install) to release its lock before giving up.
APT_LOCK_TIMEOUT="${AND_SLURM_APT_LOCK_TIMEOUT:-900}"
APT_LOCK_POLL="${AND_SLURM_APT_LOCK_POLL:-5}"

CONF_DIR=/etc/slurm
SLURM_CONF="$CONF_DIR/slurm.conf"
DBD_CONF="$CONF_DIR/slurmdbd.conf"
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
STATE_DIR=/var/spool/and_plugin_slurm
CTLD_STATE="$STATE_DIR/ctld"
SLURMD_SPOOL="$STATE_DIR/d"
MUNGE_RUN=/run/munge
MUNGE_KEY=/etc/munge/munge.key
MYSQL_RUN=/run/mysqld
MYSQL_SOCK="$MYSQL_RUN/mysqld.sock"
MYSQL_PID="$MYSQL_RUN/mysqld.pid"
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS_FILE="$CONF_DIR/.and_plugin_db_pass"

NODE_NAME="$(hostname -s)"

log() { printf '[local_cluster] %s\n' "$*" >&2; }
die() { printf '[local_cluster] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (it writes /etc/slurm and starts system daemons)"
}

# ----------------------------------------------------------------------------
# Process helpers
# ----------------------------------------------------------------------------
# pid_alive PIDFILE NAME: the pid in PIDFILE exists and its command is NAME.
pid_alive() {
    local pidfile="$1" name="$2" pid comm
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == "$name"* ]]
}

# stop_pidfile PIDFILE NAME
stop_pidfile() {
    local pidfile="$1" name="$2" pid
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(tr -dc '0-9' <"$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not exit after 20 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# wait_for SECONDS COMMAND...: retry COMMAND until it succeeds or time is up.
wait_for() {
    local timeout="$1"
    shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
}

dump_logs() {
    local f
    for f in "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log "$LOG_DIR"/slurmdbd.log \
        "$LOG_DIR"/mariadb.log /var/log/munge/munged.log; do
        [[ -f "$f" ]] || continue
        printf '\n===== last lines of %s =====\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

fail_start() {
    printf '[local_cluster] ERROR: %s\n' "$*" >&2
    dump_logs
    exit 1
}

# ----------------------------------------------------------------------------
# install
# ----------------------------------------------------------------------------
cmd_install() {
    need_root
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(munge slurmctld slurmd slurm-client)
    if [[ "$ACCOUNTING" == 1 ]]; then
        pkgs+=(slurmdbd mariadb-server)
    fi
    local missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "all packages already installed: ${pkgs[*]}"
        return 0
    fi
    log "installing: ${missing[*]}"
    apt_get update
    # Package postinst scripts try to start the services; in a container
    # without systemd that is refused, which is fine: `start` runs them.
    apt_get install -y --no-install-recommends "${missing[@]}"
    log "install done"
}

# apt_get ARGS...: apt-get, waiting (up to APT_LOCK_TIMEOUT s) while another
# apt or dpkg process holds its lock. `apt-get update` does not wait for the
# lists lock by itself (DPkg::Lock::Timeout only covers the dpkg lock), so a
# lock error is retried here; any other error fails at once.
apt_get() {
    local deadline=$((SECONDS + APT_LOCK_TIMEOUT)) out rc waited=0
    while true; do
        rc=0
        out="$(apt-get -o DPkg::Lock::Timeout=60 "$@" 2>&1)" || rc=$?
        if ((rc == 0)); then
            printf '%s\n' "$out" | tail -n 3 >&2
            return 0
        fi
        # Only a lock another process holds is waited for ("are you root?" is not).
        if ! grep -q 'Could not get lock' <<<"$out"; then
            printf '%s\n' "$out" >&2
            die "apt-get $1 failed (exit $rc)"
        fi
        if ((SECONDS >= deadline)); then
            printf '%s\n' "$out" >&2
            die "apt-get $1: another apt/dpkg process still holds the lock after ${APT_LOCK_TIMEOUT}s (AND_SLURM_APT_LOCK_TIMEOUT)"
        fi
        if ((waited == 0)); then
            log "waiting for another apt/dpkg process to finish: $(grep -m1 'Could not get lock' <<<"$out")"
            waited=1
        fi
        sleep "$APT_LOCK_POLL"
    done
}

# ----------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------
compute_node_line() {
    # slurmd -C reports the hardware as slurmd sees it (CPUs, sockets, ...);
    # keep its topology and replace RealMemory by MemTotal minus headroom.
    local hw mem_total_mb headroom real_mem
    hw="$(slurmd -C 2>/dev/null | head -n1 || true)"
    if [[ "$hw" != NodeName=* ]]; then
        hw="NodeName=$NODE_NAME CPUs=$(nproc)"
    fi
    hw="$(sed -E 's/ RealMemory=[0-9]+//; s/^NodeName=[^ ]+ //' <<<"$hw")"
    mem_total_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    if [[ -n "$MEM_HEADROOM_MB" ]]; then
        headroom="$MEM_HEADROOM_MB"
    else
        headroom=$((mem_total_mb / 10))
        ((headroom < 1024)) && headroom=1024
    fi
    real_mem=$((mem_total_mb - headroom))
    ((real_mem < 512)) && real_mem=512
    echo "NodeName=$NODE_NAME NodeAddr=127.0.0.1 NodeHostname=$NODE_NAME $hw RealMemory=$real_mem State=UNKNOWN"
}

write_slurm_conf() {
    local node_line acct_lines
    node_line="$(compute_node_line)"
    if [[ "$ACCOUNTING" == 1 ]]; then
        acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1"
    else
        acct_lines="AccountingStorageType=accounting_storage/none"
    fi
    local tmp
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
# Generated by and_plugin slurm/local_cluster.sh -- single-node test cluster.
# Rewritten on every 'start' that has to (re)launch daemons; do not edit.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE_NAME(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it can restart.
AuthInfo=cred_expire=$CRED_EXPIRE

StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups inside a container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
GresTypes=gpu

SchedulerType=sched/backfill
# Scan pending jobs every few seconds (defaults 60/30 s), so that a requeued
# job starts soon after it becomes eligible again.
SchedulerParameters=sched_interval=3,bf_interval=3
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
PreemptType=preempt/none

# Jobs may be requeued (scontrol requeue / submitit checkpointing).
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
MinJobAge=300
KillWait=5
WaitTime=0

$acct_lines
JobCompType=jobcomp/none

$node_line
PartitionName=$PARTITION Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP
EOF
    install -m 0644 "$tmp" "$SLURM_CONF"
    rm -f "$tmp"

}

write_dbd_conf() {
    local pass
    if [[ ! -s "$DB_PASS_FILE" ]]; then
        (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DB_PASS_FILE")
    fi
    pass="$(cat "$DB_PASS_FILE")"
    (
        umask 077
        cat >"$DBD_CONF" <<EOF
# Generated by and_plugin slurm/local_cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$pass
StorageLoc=$DB_NAME
EOF
    )
    chmod 600 "$DBD_CONF"
    chown root:root "$DBD_CONF"
}

# ----------------------------------------------------------------------------
# daemons
# ----------------------------------------------------------------------------
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then
        return 0
    fi
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 0755 "$MUNGE_RUN"
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating munge key $MUNGE_KEY"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom bs=1 count=1024 of="$MUNGE_KEY" status=none
        fi
    fi
    chown munge:munge /etc/munge "$MUNGE_KEY"
    chmod 0700 /etc/munge
    chmod 0400 "$MUNGE_KEY"
    rm -f "$MUNGE_RUN/munged.pid"
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged ||
        fail_start "munged failed to start"
    wait_for 20 munge_ok || fail_start "munge does not answer (munge -n | unmunge)"
}

mysql_ok() { mariadb-admin --socket="$MYSQL_SOCK" --connect-timeout=2 ping 2>/dev/null | grep -q alive; }

start_mariadb() {
    if ! mysql_ok; then
        mkdir -p "$MYSQL_RUN"
        chown mysql:mysql "$MYSQL_RUN"
        # mariadbd writes its error log as the mysql user.
        touch "$LOG_DIR/mariadb.log"
        chown mysql:mysql "$LOG_DIR/mariadb.log"
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            log "initialising MariaDB data directory"
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$LOG_DIR/mariadb.log" 2>&1 ||
                fail_start "mariadb-install-db failed"
        fi
        log "starting mariadbd"
        # setsid + nohup: detach from this shell so it survives its exit.
        setsid nohup /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql \
            --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" \
            --bind-address=127.0.0.1 --port=3306 \
            --log-error="$LOG_DIR/mariadb.log" \
            --innodb-buffer-pool-size=64M --max-connections=50 \
            </dev/null >>"$LOG_DIR/mariadb.log" 2>&1 &
        wait_for 60 mysql_ok || fail_start "MariaDB did not come up"
    fi
    local pass
    pass="$(cat "$DB_PASS_FILE")"
    mariadb --socket="$MYSQL_SOCK" -u root <<EOF || fail_start "could not create the accounting database"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

dbd_ok() { sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
    if ! pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd; then
        log "starting slurmdbd"
        /usr/sbin/slurmdbd || fail_start "slurmdbd failed to start"
    fi
    wait_for 60 dbd_ok || fail_start "slurmdbd does not answer (sacctmgr list cluster)"
    if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
        log "registering cluster $CLUSTER_NAME in slurmdbd"
        sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null ||
            fail_start "sacctmgr add cluster $CLUSTER_NAME failed"
    fi
}

start_slurmctld() {
    if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
        return 0
    fi
    log "starting slurmctld"
    # -i: ignore unreadable state files from an older run instead of dying.
    /usr/sbin/slurmctld -i || fail_start "slurmctld failed to start"
    wait_for 30 scontrol ping || fail_start "slurmctld does not answer (scontrol ping)"
}

start_slurmd() {
    if pid_alive "$RUN_DIR/slurmd.pid" slurmd; then
        return 0
    fi
    log "starting slurmd (node $NODE_NAME)"
    /usr/sbin/slurmd -N "$NODE_NAME" || fail_start "slurmd failed to start"
}

node_state() { sinfo -h -N -n "$NODE_NAME" -o '%t' 2>/dev/null | head -n1; }

node_usable() {
    local s
    s="$(node_state)"
    [[ "$s" == idle || "$s" == mix || "$s" == alloc ]]
}

wait_node_idle() {
    local deadline=$((SECONDS + START_TIMEOUT)) s resumed=0
    while true; do
        s="$(node_state)"
        case "$s" in
            idle | mix | alloc) return 0 ;;
            drain* | drng | down)
                # Left drained/down by an earlier run (e.g. different memory).
                if ((resumed == 0)); then
                    log "node is '$s' ($(sinfo -h -N -n "$NODE_NAME" -o '%E')), resuming it"
                    scontrol update NodeName="$NODE_NAME" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        if ((SECONDS >= deadline)); then
            sinfo -N -l >&2 || true
            fail_start "node $NODE_NAME not idle after ${START_TIMEOUT}s (state: '${s:-none}')"
        fi
        sleep 0.5
    done
}

all_running() {
    munge_ok || return 1
    if [[ "$ACCOUNTING" == 1 ]]; then
        mysql_ok || return 1
        pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd || return 1
    fi
    pid_alive "$RUN_DIR/slurmctld.pid" slurmctld || return 1
    pid_alive "$RUN_DIR/slurmd.pid" slurmd || return 1
    node_usable
}

cmd_start() {
    need_root
    local b
    for b in slurmctld slurmd munged sinfo; do
        command -v "$b" >/dev/null || die "$b not found (SLURM/munge not installed); run: bash $0 install"
    done
    if [[ "$ACCOUNTING" == 1 ]] && ! command -v slurmdbd >/dev/null; then
        die "slurmdbd/mariadb not installed; run: bash $0 install (or set AND_SLURM_ACCOUNTING=0)"
    fi
    if [[ -f "$SLURM_CONF" ]] && all_running; then
        log "cluster already running (node $NODE_NAME: $(node_state))"
        return 0
    fi
    local t0=$SECONDS
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$CTLD_STATE" "$SLURMD_SPOOL"
    chmod 0755 "$LOG_DIR" "$RUN_DIR"
    # Only (re)write the config when slurmctld is down: changing it under a
    # running controller needs `restart`.
    if ! pid_alive "$RUN_DIR/slurmctld.pid" slurmctld || [[ ! -f "$SLURM_CONF" ]]; then
        write_slurm_conf
    fi
    start_munge
    if [[ "$ACCOUNTING" == 1 ]]; then
        write_dbd_conf
        start_mariadb
        start_slurmdbd
    fi
    start_slurmctld
    start_slurmd
    wait_node_idle
    log "cluster up in $((SECONDS - t0))s: partition '$PARTITION', node $NODE_NAME ($(sinfo -h -N -n "$NODE_NAME" -o '%c CPUs, %m MB'))"
}

cmd_stop() {
    need_root
    stop_pidfile "$RUN_DIR/slurmd.pid" slurmd
    stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
    stop_pidfile "$RUN_DIR/slurmdbd.pid" slurmdbd
    stop_pidfile "$MYSQL_PID" mariadbd
    stop_pidfile "$MUNGE_RUN/munged.pid" munged
    log "stopped"
}

cmd_status() {
    local rc=0 name pidfile
    for pair in "munged:$MUNGE_RUN/munged.pid" "mariadbd:$MYSQL_PID" \
        "slurmdbd:$RUN_DIR/slurmdbd.pid" "slurmctld:$RUN_DIR/slurmctld.pid" \
        "slurmd:$RUN_DIR/slurmd.pid"; do
        name="${pair%%:*}"
        pidfile="${pair#*:}"
        if pid_alive "$pidfile" "$name"; then
            printf '%-10s running (pid %s)\n' "$name" "$(cat "$pidfile")"
        else
            printf '%-10s stopped\n' "$name"
            if [[ "$name" != mariadbd && "$name" != slurmdbd ]] || [[ "$ACCOUNTING" == 1 ]]; then
                rc=1
            fi
        fi
    done
    if command -v sinfo >/dev/null && scontrol ping >/dev/null 2>&1; then
        echo
        sinfo -N -o '%N %P %t %c %m %E' || true
        echo
        squeue || true
        node_usable || rc=1
    else
        rc=1
    fi
    return $rc
}

cmd_logs() {
    dump_logs
}

# Sourced (tests call single functions such as apt_get): define, do not run.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    *)
        echo "usage: $0 {install|start|stop|restart|status|logs}" >&2
        exit 2
        ;;
esac
