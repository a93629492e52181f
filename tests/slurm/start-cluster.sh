#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine (Debian's slurm-wlm + munge), for the tests
# marked `slurm` and for trying `python -m bench.run --executor slurm` on a laptop.
#
#   sudo bash tests/slurm/start-cluster.sh          # installs the packages if missing, starts, waits
#   sudo bash tests/slurm/start-cluster.sh --stop   # stops the daemons it started
#
# What it does: installs slurm-wlm and munge with apt-get when `slurmctld` is missing; creates a munge
# key if there is none; writes a slurm.conf for this host (its real CPU count and memory from
# `slurmd -C`, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none: no cgroups needed) with the
# state, spool, pid and log files in $PRUNEBENCH_SLURM_DIR (default /tmp/prunebench-slurm); links
# /etc/slurm/slurm.conf to it (only if that file is absent or one this script wrote: a real cluster's
# configuration is never overwritten); starts munged, slurmctld and slurmd; and waits until `sinfo`
# shows the node idle. It needs root (the daemons run as root here). Logs: $PRUNEBENCH_SLURM_DIR/*.log.
set -euo pipefail

STATE_DIR=${PRUNEBENCH_SLURM_DIR:-/tmp/prunebench-slurm}
CONF=$STATE_DIR/slurm.conf
MARKER="# written by prunebench tests/slurm/start-cluster.sh"
WAIT_S=${PRUNEBENCH_SLURM_WAIT_S:-60}

log() { echo "[start-cluster] $*"; }
die() { echo "[start-cluster] error: $*" >&2; exit 1; }

stop_daemons() {
  for pidfile in "$STATE_DIR/slurmd.pid" "$STATE_DIR/slurmctld.pid"; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" && log "stopped $(basename "$pidfile" .pid) ($pid)"
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
  done
}

if [ "${1:-}" = "--stop" ]; then
  stop_daemons
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (sudo): munged, slurmctld and slurmd are started here"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$STATE_DIR"/{state,spool} /etc/slurm /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge

# munge: one key, one daemon.
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 20); do munge -n >/dev/null 2>&1 && break; sleep 0.25; done
  munge -n >/dev/null 2>&1 || die "munged did not start (see /var/log/munge/munged.log)"
fi

# slurm.conf for this host: the node line comes from `slurmd -C` (real CPUs, sockets, memory).
HOST=$(hostname -s)
NODE_LINE=$(slurmd -C | head -n 1)
MEMORY=$(echo "$NODE_LINE" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
NODE_LINE=$(echo "$NODE_LINE" | sed "s/RealMemory=[0-9]*/RealMemory=$((MEMORY * 95 / 100))/")
cat >"$CONF" <<EOF
$MARKER
ClusterName=prunebench
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# quick turnaround for tests: kill 2 s after SIGTERM, keep finished jobs visible for 5 minutes
KillWait=2
MinJobAge=300
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
MaxArraySize=1001
$NODE_LINE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

if [ -e /etc/slurm/slurm.conf ] && ! grep -qF "$MARKER" /etc/slurm/slurm.conf; then
  log "/etc/slurm/slurm.conf belongs to another cluster: left alone; use: export SLURM_CONF=$CONF"
else
  ln -sf "$CONF" /etc/slurm/slurm.conf
fi
export SLURM_CONF=$CONF

# (Re)start the daemons so that they read this configuration. A live controller keeps its jobs; a
# fresh start (after a reboot, or in CI after the daemons of an earlier run were ended) clears the
# saved state, so that jobs of a dead cluster are not requeued here.
CLEAR=-c
if [ -s "$STATE_DIR/slurmctld.pid" ] && kill -0 "$(cat "$STATE_DIR/slurmctld.pid")" 2>/dev/null; then
  CLEAR=-i
fi
stop_daemons
sleep 0.5
log "starting slurmctld and slurmd ($NODE_LINE)"
slurmctld "$CLEAR" 2>>"$STATE_DIR/slurmctld.log" || die "slurmctld did not start (see $STATE_DIR/slurmctld.log)"
slurmd 2>>"$STATE_DIR/slurmd.log" || die "slurmd did not start (see $STATE_DIR/slurmd.log)"

started=$(date +%s)
until [ "$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1)" = "idle" ]; do
  if [ $(( $(date +%s) - started )) -ge "$WAIT_S" ]; then
    sinfo -N -l || true
    tail -n 20 "$STATE_DIR/slurmctld.log" "$STATE_DIR/slurmd.log" || true
    die "node $HOST not idle after ${WAIT_S}s"
  fi
  sleep 0.5
done
log "cluster up in $(( $(date +%s) - started ))s: $(sinfo -h -o '%P %D %T %c CPUs %m MB' | head -n 1)"
log "config: $CONF (export SLURM_CONF=$CONF if sbatch cannot find it); logs: $STATE_DIR/*.log"
