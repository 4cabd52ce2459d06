#!/usr/bin/env bash
# Stop the test cluster tests/slurm/start.sh started: only the daemons whose pid
# files it wrote in $FWBENCH_SLURM_DIR, each by its pid, and remove its link
# /etc/slurm/slurm.conf. Keeps the state directory (logs, job state) for
# inspection; delete it to start afresh.
set -euo pipefail

STATE_DIR=${FWBENCH_SLURM_DIR:-/tmp/fwbench-slurm}
STOP_TIMEOUT_S=20
DEFAULT_CONF=/etc/slurm/slurm.conf

stop() {  # stop NAME PIDFILE: SIGTERM the pid if it still is NAME, wait for it to exit
    local name=$1 pidfile=$2 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$name"* ]]; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq "$STOP_TIMEOUT_S"); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "stopped $name ($pid)"; return 0; }
        sleep 1
    done
    echo "tests/slurm/stop.sh: $name ($pid) still running after ${STOP_TIMEOUT_S}s" >&2
    return 1
}

stop slurmd "$STATE_DIR/slurmd.pid"
stop slurmctld "$STATE_DIR/slurmctld.pid"
stop munged "$STATE_DIR/munge/munged.pid"
if [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$STATE_DIR/slurm.conf" ]]; then
    rm "$DEFAULT_CONF"
fi
