#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (munged, slurmctld, slurmd): what diagnose's SLURM tests submit to, in CI
# and for a developer who wants to try `hydra/launcher=submitit_slurm` without a cluster. Needs root and Debian's
# `slurm-wlm` and `munge` (apt-get install slurm-wlm munge). Its config, state, sockets and logs live in one folder,
# ${DIAGNOSE_SLURM_DIR:-${TMPDIR:-/tmp}/diagnose-slurm}; nothing under /etc is changed.
#
#   bash scripts/slurm_cluster.sh start    # idempotent: a cluster that is up is left as it is
#   export SLURM_CONF=/tmp/diagnose-slurm/slurm.conf   # as `start` says: sbatch, squeue, ... read it
#   bash scripts/slurm_cluster.sh status   # exit 0 when the node is up (and says the export, as `start` does)
#   bash scripts/slurm_cluster.sh stop     # ends the three daemons and removes the folder
set -euo pipefail

DIR=${DIAGNOSE_SLURM_DIR:-${TMPDIR:-/tmp}/diagnose-slurm}
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket
NODE=$(hostname -s)
export SLURM_CONF=$CONF

say() { echo "slurm_cluster: $*" >&2; }

alive() {  # the daemon whose pid file is $1 runs (a starting daemon may rewrite its file: read it quietly)
    [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

up() {  # the three daemons run and the node takes jobs
    alive "$DIR/munge/munged.pid" && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" &&
        [[ "$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null)" =~ ^(idle|mixed|allocated) ]]
}

stop() {
    for daemon in slurmd slurmctld; do
        if alive "$DIR/$daemon.pid"; then
            kill "$(cat "$DIR/$daemon.pid")"
        fi
    done
    for _ in $(seq 50); do  # their jobs' steps end with slurmd
        alive "$DIR/slurmd.pid" || alive "$DIR/slurmctld.pid" || break
        sleep 0.1
    done
    if alive "$DIR/munge/munged.pid"; then
        munged --socket="$SOCKET" --stop >/dev/null
    fi
    rm -rf "$DIR"
}

write_conf() {
    local memory_mb
    memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # slurmd drains a node with less
    cat >"$CONF" <<EOF
# One node, one partition, written by scripts/slurm_cluster.sh; no accounting (sacct answers nothing, as on many
# small clusters).
ClusterName=diagnose
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (SLURM's default is 120 s)
AuthInfo=socket=$SOCKET,cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# a job whose BeginTime has passed is started within a few seconds, not at the next minute's scheduling pass
SchedulerParameters=sched_interval=2
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$NODE CPUs=$(nproc) RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    if up; then
        say "up already (node $NODE)"
    else
        [ "$(id -u)" = 0 ] || { say "needs root (the daemons run as root here)"; exit 1; }
        for tool in munged slurmctld slurmd sinfo; do
            command -v "$tool" >/dev/null || { say "$tool is missing: apt-get install slurm-wlm munge"; exit 1; }
        done
        stop  # whatever a half-started or crashed cluster left
        mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool"
        # munged wants its socket's folder its own, reachable by all
        chown munge:munge "$DIR/munge" && chmod 755 "$DIR" "$DIR/munge"
        if [ ! -s /etc/munge/munge.key ]; then  # Debian's munge package makes one; a bare install may not
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
            chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
        fi
        runuser -u munge -- munged --socket="$SOCKET" --pid-file="$DIR/munge/munged.pid" \
            --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
        write_conf
        slurmctld -f "$CONF"
        slurmd -f "$CONF"
        for _ in $(seq 60); do
            up && break
            sleep 0.5
        done
        up || { say "the node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log"; exit 1; }
        say "up: node $NODE with $(nproc) CPUs, partition debug, in $DIR"
    fi
    echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if up; then sinfo >&2; echo "export SLURM_CONF=$CONF"; else say "not up (in $DIR)"; exit 1; fi ;;
    *) say "usage: $0 start|stop|status"; exit 2 ;;
esac
