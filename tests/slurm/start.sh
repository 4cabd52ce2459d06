#!/usr/bin/env bash
# Start a single-node SLURM on this machine for tests/test_slurm.py (idempotent).
#
# Everything lives in $FWBENCH_SLURM_DIR (default /tmp/fwbench-slurm): its own
# slurm.conf, munge key and socket, state, logs and pid files, on ports of its
# own. Clients find this cluster through SLURM_CONF=$FWBENCH_SLURM_DIR/slurm.conf.
# One thing lives outside it: the Snakemake job step drops SLURM_* variables,
# SLURM_CONF included, before it calls srun inside a job, so that srun reads the
# default /etc/slurm/slurm.conf. The script links that to its own config when
# there is none, and refuses to run beside a real SLURM's config.
#
# Needs root (daemons, apt). Installs Debian's munge, slurmctld, slurmd and
# slurm-client when missing. No systemd needed: the daemons are started directly.
# The node declares two GPUs backed by stand-in device files: jobs asking for
# `gpu: 1` are scheduled, two at a time, and get CUDA_VISIBLE_DEVICES, but no
# driver is there, so the frameworks still run on the CPU.
# Stop with tests/slurm/stop.sh (stops only what this script started).
set -euo pipefail

STATE_DIR=${FWBENCH_SLURM_DIR:-/tmp/fwbench-slurm}
CTLD_PORT=${FWBENCH_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${FWBENCH_SLURM_SLURMD_PORT:-16818}
# Declared, not enforced (no cgroups): room for two of the profile's GPU jobs
# (2 CPUs and 8000 MB each).
NODE_CPUS=4
NODE_MEMORY_MB=16384
NODE_GPUS=2
READY_TIMEOUT_S=60
PACKAGES=(munge slurmctld slurmd slurm-client)

MUNGE_DIR=$STATE_DIR/munge
CONF=$STATE_DIR/slurm.conf
DEFAULT_CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)
export SLURM_CONF=$CONF

die() { echo "tests/slurm/start.sh: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the pid in PIDFILE is a running process
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    if command -v munged >/dev/null && command -v slurmctld >/dev/null \
        && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get: install ${PACKAGES[*]}"
    echo "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; }
}

start_munge() {
    alive "$MUNGE_DIR/munged.pid" && return
    mkdir -p "$MUNGE_DIR"
    chown munge:munge "$MUNGE_DIR"
    # Clients need to reach the socket (execute on the directory); the key stays 0400.
    chmod 0711 "$MUNGE_DIR"
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 0400 "$MUNGE_DIR/munge.key"
    runuser -u munge -- munged \
        --socket="$MUNGE_DIR/munge.socket" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed"
}

write_config() {
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/slurmd" "$STATE_DIR/log"
    # Stand-ins for /dev/nvidia<i>: slurmd wants a character device per GPU (NVIDIA's
    # major 195); no driver sits behind them.
    local i
    for ((i = 0; i < NODE_GPUS; i++)); do
        [[ -c $STATE_DIR/nvidia$i ]] || { rm -f "$STATE_DIR/nvidia$i"; mknod "$STATE_DIR/nvidia$i" c 195 "$i"; }
    done
    cat > "$CONF" <<EOF
# Written by tests/slurm/start.sh: a single-node test cluster, no accounting.
ClusterName=fwbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
# No cgroups, no systemd, no slurmdbd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue for a day: the profile's squeue status checks need it.
MinJobAge=86400
# Trust the node line below instead of the hardware slurmd detects.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEMORY_MB Gres=gpu:$NODE_GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$STATE_DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$STATE_DIR/nvidia[0-$((NODE_GPUS - 1))]
EOF
}

link_default_config() {
    if [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$CONF" ]]; then
        return
    fi
    [[ -e $DEFAULT_CONF || -L $DEFAULT_CONF ]] \
        && die "$DEFAULT_CONF exists: srun inside the test jobs would use that cluster, not this one"
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -s "$CONF" "$DEFAULT_CONF"
}

start_daemons() {
    alive "$STATE_DIR/slurmctld.pid" || slurmctld -f "$CONF"
    alive "$STATE_DIR/slurmd.pid" || slurmd -f "$CONF" -N "$NODE"
}

wait_until_idle() {
    local state=""
    for _ in $(seq "$READY_TIMEOUT_S"); do
        state=$(sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null || true)
        case $state in
            idle|mix|alloc) echo "SLURM ready: SLURM_CONF=$CONF, node $NODE ($state)"; return ;;
            down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    die "node $NODE not ready after ${READY_TIMEOUT_S}s (state '${state}'); see $STATE_DIR/log/"
}

[[ $(id -u) == 0 ]] || die "needs root (it starts munged, slurmctld and slurmd)"
install_packages
mkdir -p "$STATE_DIR"
if ! alive "$STATE_DIR/slurmctld.pid"; then
    write_config
fi
link_default_config
start_munge
start_daemons
wait_until_idle
