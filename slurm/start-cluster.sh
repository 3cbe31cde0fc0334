#!/usr/bin/env bash
# Start a real one-node SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) on this
# Debian machine, for the `slurm` tests and for trying the SLURM path on a workstation.
#
# Idempotent: installs missing packages, writes the configuration, starts only the daemons
# that are not running, and waits until the node is idle. Needs root. Works without systemd
# (daemons are started directly, with pid files). Facts behind each setting: SLURM-NOTES.md.
#
#   slurm/start-cluster.sh          # about 80 s on a fresh machine, about 2 s when already up
#   WEBSSL_SLURM_CPUS=8 slurm/start-cluster.sh   # CPUs the node advertises (default: max(8, real))
set -euo pipefail

log() { echo "[start-cluster] $*" >&2; }
die() { echo "[start-cluster] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (installs packages and starts daemons)"

CLUSTER=webssl
HOST=$(hostname -s)
CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
SLURMD_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
DB_PASS=webssl-slurmdbd   # local-only account on 127.0.0.1; not a secret

alive() {  # alive PIDFILE NAME: the pid in PIDFILE is running the program NAME
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -r "/proc/$pid/comm" ] && grep -q "^$2" "/proc/$pid/comm"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
    sleep 0.5
  done
}

# ---- packages -------------------------------------------------------------------------
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
mkdir -p "$CONF_DIR" "$STATE_DIR" "$SLURMD_DIR" "$LOG_DIR" /run/munge /run/mysqld

# ---- munge ----------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! alive /run/munge/munged.pid munged; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
fi
wait_for 20 munge sh -c 'munge -n | unmunge'

# ---- configuration --------------------------------------------------------------------
read -r REAL_CPUS REAL_MEM < <(slurmd -C | awk '/NodeName/ {
  for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "CPUs") c = kv[2]; if (kv[1] == "RealMemory") m = kv[2] }
  print c, m }')
CPUS=${WEBSSL_SLURM_CPUS:-$(( REAL_CPUS > 8 ? REAL_CPUS : 8 ))}
# The tests run a 2-task training job next to other jobs (1 CPU each): keep room for that.
[ "$CPUS" -ge 4 ] || die "WEBSSL_SLURM_CPUS=$CPUS: the node needs at least 4 CPUs (2 tasks + other jobs)"
# Multi-task jobs meet at the first host of the node list (torch.distributed's MASTER_ADDR), and
# gloo looks up this host's name: make sure it resolves without DNS.
if ! getent hosts "$HOST" >/dev/null; then
  log "adding $HOST to /etc/hosts (127.0.0.1)"
  echo "127.0.0.1 $HOST" >> /etc/hosts
fi
NEW_CONF=$(cat <<CONF
# Written by webssl slurm/start-cluster.sh: a one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SLURMD_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
KillWait=10
MinJobAge=300
SchedulerParameters=bf_interval=5,sched_interval=5
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
)
DBD_CONF=$(cat <<CONF
# Written by webssl slurm/start-cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
)
changed=0
if [ "$(cat $CONF_DIR/slurm.conf 2>/dev/null)" != "$NEW_CONF" ]; then
  printf '%s\n' "$NEW_CONF" > $CONF_DIR/slurm.conf; changed=1
fi
if [ "$(cat $CONF_DIR/slurmdbd.conf 2>/dev/null)" != "$DBD_CONF" ]; then
  printf '%s\n' "$DBD_CONF" > $CONF_DIR/slurmdbd.conf; changed=1
fi
chmod 0600 $CONF_DIR/slurmdbd.conf

# ---- MariaDB (accounting storage) ------------------------------------------------------
chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  log "initialising MariaDB"
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
if ! mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
  log "starting MariaDB"
  # Fully detached: a caller that pipes this script's output must not wait on mariadbd.
  setsid -f /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port=3306 \
    --pid-file=/run/mysqld/mysqld.pid >/dev/null 2>&1 </dev/null
  wait_for 60 MariaDB mariadb-admin --protocol=socket ping
fi
mariadb --protocol=socket -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# ---- slurmdbd, slurmctld, slurmd -------------------------------------------------------
if [ $changed = 1 ]; then  # configuration changed: restart what runs with the old one
  for pf in /run/slurmd.pid:slurmd /run/slurmctld.pid:slurmctld /run/slurmdbd.pid:slurmdbd; do
    if alive "${pf%%:*}" "${pf##*:}"; then kill "$(cat "${pf%%:*}")"; sleep 1; fi
  done
fi
if ! alive /run/slurmdbd.pid slurmdbd; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
fi
wait_for 60 slurmdbd sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if ! alive /run/slurmctld.pid slurmctld; then
  log "starting slurmctld"
  /usr/sbin/slurmctld
fi
wait_for 30 "scontrol ping" sh -c 'scontrol ping | grep -q UP'
if ! alive /run/slurmd.pid slurmd; then
  log "starting slurmd"
  /usr/sbin/slurmd
fi
node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1; }
deadline=$((SECONDS + 60))
while :; do
  st=$(node_state)
  case "$st" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|fail*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  [ $SECONDS -lt $deadline ] || die "node $HOST is '$st', not idle (see $LOG_DIR/slurmd.log)"
  sleep 0.5
done
log "cluster '$CLUSTER' up: node $HOST ($CPUS CPUs) is $st; accounting on"
