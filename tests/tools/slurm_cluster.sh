#!/usr/bin/env bash
# A throw-away one-node Slurm on this machine, for tests and for trying the sbatch scripts.
#
# Everything lives in one scratch folder: a private munge key, socket and daemon, a
# slurm.conf with private ports, and the state, spool, log and pid files of slurmctld and
# slurmd. Nothing under /etc is changed, and a munged or Slurm already running here is
# left alone (their sockets and ports are not the ones used here).
#
# Sourced, it defines:
#   slurm_cluster_install        install slurm-wlm and munge with apt-get when missing
#   slurm_cluster_start DIR [C] [G]  start a cluster in DIR (created) with C CPUs and G fake
#                                GPUs (default: nproc, 2); exports SLURM_CONF and
#                                SLURM_CLUSTER_GPUS (0 where device nodes cannot be made)
#   slurm_cluster_stop DIR       stop the daemons by their pid files (safe to call twice)
#   slurm_wait_job ID SECONDS    poll squeue until job ID has left the queue
#   slurm_job_field ID FIELD     one field (e.g. JobState, ExitCode) of scontrol show job
# Run as a script: slurm_cluster.sh start DIR | stop DIR (as root).
#
# The GPUs are fake device nodes (like /dev/null) declared as gres/gpu, so --gpus-per-task=1 in an
# sbatch script is accepted and scheduled here exactly as on a GPU cluster.

slurm_cluster_log() { echo "slurm_cluster: $*" >&2; }

# Install slurm-wlm and munge when one of their programs is missing. Returns 1 (with the
# reason printed) when that is not possible here.
slurm_cluster_install() {
    local prog missing=0
    for prog in slurmctld slurmd sbatch squeue sinfo scontrol munged munge; do
        if ! command -v "$prog" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$prog ]]; then
            missing=1
        fi
    done
    ((missing == 0)) && return 0
    if [[ $(id -u) -ne 0 ]]; then
        slurm_cluster_log "slurm-wlm/munge missing and not root: cannot install them"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        slurm_cluster_log "slurm-wlm/munge missing and no apt-get to install them"
        return 1
    fi
    slurm_cluster_log "installing slurm-wlm and munge with apt-get"
    local log
    log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 ||
        ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            slurm-wlm munge >>"$log" 2>&1; then
        slurm_cluster_log "apt-get could not install slurm-wlm munge; its last lines:"
        tail -5 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    return 0
}

# A TCP port nobody listens on now (the kernel picks it).
slurm_cluster_free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

# Wait up to $2 seconds for the command "$3..." to succeed.
slurm_cluster_wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            slurm_cluster_log "timed out after ${seconds}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

slurm_cluster_write_conf() {
    local dir=$1 cpus=$2 gpus=$3 host=$4
    local mem_mb gres_spec=
    ((gpus > 0)) && gres_spec="Gres=gpu:$gpus"
    # Half of this machine's memory: a node that reports less than RealMemory is drained.
    mem_mb=$(awk '/^MemTotal:/ { print int($2 / 2048) }' /proc/meminfo)
    cat >"$dir/slurm.conf" <<EOF
# Written by tests/tools/slurm_cluster.sh: a one-node test cluster on this machine.
ClusterName=hspmntest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(slurm_cluster_free_port)
SlurmdPort=$(slurm_cluster_free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
GresTypes=gpu
# Keep finished jobs visible to scontrol for the length of a test.
MinJobAge=900
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb $gres_spec State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    # Slurm drops GPUs without device files; these are character devices like /dev/null,
    # one per fake GPU, so Slurm schedules them and sets CUDA_VISIBLE_DEVICES per task.
    local i
    : >"$dir/gres.conf"
    for ((i = 0; i < gpus; i++)); do
        echo "NodeName=$host Name=gpu File=$dir/gpu$i" >>"$dir/gres.conf"
    done
}

# Make $2 fake GPU device nodes in $1; prints how many could be made (0 without CAP_MKNOD).
slurm_cluster_make_gpus() {
    local dir=$1 gpus=$2 i
    for ((i = 0; i < gpus; i++)); do
        rm -f "$dir/gpu$i"
        if ! mknod "$dir/gpu$i" c 1 3 2>/dev/null; then
            slurm_cluster_log "mknod not permitted here: the test cluster has no GPUs"
            echo 0
            return 0
        fi
    done
    echo "$gpus"
}

slurm_cluster_start_munge() {
    local dir=$1
    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge.key"
    # --force: munged runs as root here and the scratch folder is not its usual home.
    if ! munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" \
        --seed-file="$dir/munged.seed"; then
        slurm_cluster_log "munged did not start; see $dir/munged.log"
        return 1
    fi
    if ! slurm_cluster_wait_for "munge credentials" 10 \
        bash -c "munge -S '$dir/munge.socket' -n | unmunge -S '$dir/munge.socket'"; then
        cat "$dir/munged.log" >&2
        return 1
    fi
}

slurm_cluster_node_idle() {
    [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]
}

slurm_cluster_start() {
    local dir=$1 cpus=${2:-$(nproc)} gpus=${3:-2}
    local host
    host=$(hostname -s)
    mkdir -p "$dir/state" "$dir/spool"
    # munged wants every folder on the socket's path to be searchable by all.
    chmod 755 "$dir"
    gpus=$(slurm_cluster_make_gpus "$dir" "$gpus")
    slurm_cluster_write_conf "$dir" "$cpus" "$gpus" "$host"
    export SLURM_CONF=$dir/slurm.conf
    # How many (fake) GPUs the node has, for callers that request them.
    export SLURM_CLUSTER_GPUS=$gpus
    slurm_cluster_start_munge "$dir" || return 1
    # -c: a clean start, no state from an earlier run.
    if ! slurmctld -c -f "$SLURM_CONF"; then
        slurm_cluster_log "slurmctld did not start; see $dir/slurmctld.log"
        return 1
    fi
    if ! slurmd -c -f "$SLURM_CONF"; then
        slurm_cluster_log "slurmd did not start; see $dir/slurmd.log"
        return 1
    fi
    if ! slurm_cluster_wait_for "node $host to be idle in sinfo" 30 slurm_cluster_node_idle; then
        sinfo -N -l >&2 || true
        tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
        return 1
    fi
    slurm_cluster_log "up: node $host, $cpus CPUs, $gpus fake GPUs, SLURM_CONF=$SLURM_CONF"
}

# Stop one daemon by its pid file: TERM, then KILL after 10 s.
slurm_cluster_kill_pidfile() {
    local pidfile=$1 pid i
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || {
        rm -f "$pidfile"
        return 0
    }
    for ((i = 0; i < 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

slurm_cluster_stop() {
    local dir=$1
    [[ -d $dir ]] || return 0
    # slurmd first: it ends the job steps it still runs.
    slurm_cluster_kill_pidfile "$dir/slurmd.pid"
    slurm_cluster_kill_pidfile "$dir/slurmctld.pid"
    slurm_cluster_kill_pidfile "$dir/munged.pid"
}

# Poll squeue until job $1 is no longer pending, running or completing; fail after $2 s.
slurm_wait_job() {
    local job=$1 seconds=$2 state
    local deadline=$((SECONDS + seconds))
    while :; do
        state=$(squeue -h -j "$job" -o %T 2>/dev/null || true)
        case $state in
        "" | COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
            return 0
            ;;
        esac
        if ((SECONDS >= deadline)); then
            slurm_cluster_log "job $job still $state after ${seconds}s"
            return 1
        fi
        sleep 1
    done
}

# The value of FIELD in `scontrol show job ID` (e.g. JobState, ExitCode, Restarts).
slurm_job_field() {
    scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    case ${1:-} in
    start)
        slurm_cluster_install
        slurm_cluster_start "${2:?usage: slurm_cluster.sh start DIR}" "${3:-}" "${4:-}"
        echo "export SLURM_CONF=${2}/slurm.conf"
        ;;
    stop) slurm_cluster_stop "${2:?usage: slurm_cluster.sh stop DIR}" ;;
    *)
        echo "usage: slurm_cluster.sh start DIR [CPUS] [GPUS] | stop DIR" >&2
        exit 2
        ;;
    esac
fi
