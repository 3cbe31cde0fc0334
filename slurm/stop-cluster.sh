#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by slurm/start-cluster.sh. Idempotent.
# Cancels all jobs first (their slurmstepd processes outlive slurmd), then stops slurmd,
# slurmctld, slurmdbd, MariaDB and munged by pid file, checking /proc/PID/comm before killing.
# Configuration, accounting database and packages stay; start-cluster.sh brings it back.
set -uo pipefail

log() { echo "[stop-cluster] $*" >&2; }

stop() {  # stop PIDFILE NAME
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1" 2>/dev/null) || return 0
  if [ -r "/proc/$pid/comm" ] && grep -q "^$2" "/proc/$pid/comm"; then
    log "stopping $2 ($pid)"
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 40); do [ -e "/proc/$pid" ] || break; sleep 0.25; done
    if [ -e "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null; fi
  fi
  rm -f "$1"
}

if command -v scancel >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then
  scancel --full --quiet --user=root 2>/dev/null || true
  scancel --full --quiet 2>/dev/null || true
  for _ in $(seq 1 30); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.5
  done
fi
stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/slurmdbd.pid slurmdbd
stop /run/mysqld/mysqld.pid mariadbd
stop /run/munge/munged.pid munged
log "stopped"
