#!/usr/bin/env bash
# A one-node SLURM cluster (with accounting, so sacct works) and a PostgreSQL server for Optuna studies, on loopback,
# from Debian's packages: what the cluster test tier (pytest -m cluster) and docs/cluster.md run against.
#
#   scripts/local_cluster.sh start    install missing packages (as root), start everything, wait until ready,
#                                     print the PostgreSQL URL; idempotent (already up: exit 0, same URL)
#   scripts/local_cluster.sh stop     stop everything, restore a backed-up /etc/slurm/slurm.conf
#   scripts/local_cluster.sh status   one line per service; exit 1 when one is down
#   scripts/local_cluster.sh env      the URL again, as `export` lines
#
# The node is this host with the CPUs and memory `slurmd -C` detects, one partition (`main`), no cgroups
# (proctrack/linuxproc, task/none), select/cons_tres with CR_Core, SlurmUser=root. slurm.conf is written to
# /etc/slurm/slurm.conf, where sinfo, sbatch, srun and scontrol find it in any shell. State and logs live in
# $S2S_CLUSTER_DIR (default /var/tmp/s2s_cluster). Ports (loopback only): slurmctld 6817, slurmd 6818,
# slurmdbd 6819, MariaDB 3307 (slurmdbd's storage), PostgreSQL 5433 (a cluster of its own, `s2s_jax`).
set -euo pipefail

STATE="${S2S_CLUSTER_DIR:-/var/tmp/s2s_cluster}"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
BACKUP_SUFFIX=.s2s_jax-backup
CLUSTER_NAME=s2s
PG_CLUSTER=s2s_jax
PG_PORT=5433
PG_USER=s2s
PG_PASSWORD=s2s
PG_DB=s2s_studies
MARIADB_PORT=3307
SLURMCTLD_PORT=6817
SLURMD_PORT=6818
SLURMDBD_PORT=6819
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server postgresql)

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

pg_version() {
  # The installed PostgreSQL major version (the newest, if several).
  ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1
}

pg_url() { echo "postgresql://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/${PG_DB}"; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "packages ${missing[*]} are missing and installing them needs root."
  if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    log 'the package lists are empty: apt-get update'
    apt-get update -q >"$STATE/apt.log" 2>&1 || die "apt-get update failed (see $STATE/apt.log)."
  fi
  log "installing ${missing[*]}"
  # Debian starts installed services itself where it can; policy-rc.d (exit 101) stops that: this script starts
  # them, on its own ports.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 \
    || { [[ $made_policy -eq 1 ]] && rm -f "$policy"; die "apt-get install ${missing[*]} failed (see $STATE/apt.log)."; }
  [[ $made_policy -eq 1 ]] && rm -f "$policy"
  return 0
}

# The process listening on TCP port $1 on loopback or any address ('' when the port is free).
listener() {
  ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\).*/\1/p' | head -1
}

# Fails when port $1 is taken by a process other than $2 (the daemon this script would start there).
check_port() {
  local who
  who=$(listener "$1")
  if [[ -n $who && $who != "\"$2\"" ]]; then
    die "port $1 (for $2) is in use by $who; stop it, or run this script on a machine where $1 is free."
  fi
}

running() { pgrep -x "$1" >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2
  shift 2
  for ((i = 0; i < limit * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what not ready after $limit s (logs in $STATE)."
}

write_slurm_conf() {
  local node
  node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=...
  [[ $node == NodeName=* ]] || die "slurmd -C printed no node line: $node"
  mkdir -p /etc/slurm "$STATE/slurmctld" "$STATE/slurmd"
  if [[ -e $CONF && ! -e $CONF$BACKUP_SUFFIX ]] && ! grep -q '^# written by s2s_jax' "$CONF"; then
    cp -p "$CONF" "$CONF$BACKUP_SUFFIX"
  fi
  cat >"$CONF" <<EOF
# written by s2s_jax scripts/local_cluster.sh (stop restores the previous file, if there was one)
ClusterName=$CLUSTER_NAME
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MessageTimeout=30
SlurmdTimeout=120
KillWait=30
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$SLURMDBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
$node State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DBD_CONF" <<EOF
# written by s2s_jax scripts/local_cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DBD_CONF"
}

start_munge() {
  running munged && return 0
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for 20 munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
  running mariadbd && return 0
  check_port "$MARIADB_PORT" mariadbd
  local data="$STATE/mariadb"
  if [[ ! -d $data/mysql ]]; then
    mkdir -p "$data" && chown mysql:mysql "$data"
    mariadb-install-db --user=mysql --datadir="$data" --auth-root-authentication-method=normal \
      >"$STATE/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $STATE/mariadb-install.log)."
  fi
  mkdir -p "$STATE/run" && chown mysql:mysql "$STATE/run"
  # --skip-grant-tables is not used: root@localhost without a password (unix socket and loopback only).
  nohup runuser -u mysql -- /usr/sbin/mariadbd --datadir="$data" --bind-address=127.0.0.1 --port="$MARIADB_PORT" \
    --socket="$STATE/run/mariadb.sock" --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/mariadb.log" \
    >/dev/null 2>&1 &
  wait_for 60 MariaDB mariadb-admin --socket="$STATE/run/mariadb.sock" ping
  # slurmdbd connects over TCP as root@127.0.0.1.
  mariadb --socket="$STATE/run/mariadb.sock" -e \
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_slurm() {
  if ! running slurmdbd; then
    check_port "$SLURMDBD_PORT" slurmdbd
    slurmdbd
    wait_for 60 slurmdbd bash -c "ss -Hltn 'sport = :$SLURMDBD_PORT' | grep -q LISTEN"
  fi
  if ! running slurmctld; then
    check_port "$SLURMCTLD_PORT" slurmctld
    slurmctld
    wait_for 60 slurmctld scontrol ping
  fi
  if ! running slurmd; then
    check_port "$SLURMD_PORT" slurmd
    slurmd
  fi
  wait_for 90 'the SLURM node' bash -c "sinfo -h -o '%t' | grep -Eq '^(idle|mix|alloc)'"
}

start_postgres() {
  local v
  v=$(pg_version)
  [[ -n $v ]] || die 'PostgreSQL is not installed (/usr/lib/postgresql is empty).'
  if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$v $PG_CLUSTER"; then
    check_port "$PG_PORT" postgres
    pg_createcluster "$v" "$PG_CLUSTER" --port="$PG_PORT" -- --auth-local=peer --auth-host=scram-sha-256 \
      >"$STATE/pg-create.log" 2>&1 || die "pg_createcluster failed (see $STATE/pg-create.log)."
    echo "listen_addresses = '127.0.0.1'" >"/etc/postgresql/$v/$PG_CLUSTER/conf.d/s2s_jax.conf"
  fi
  if ! pg_lsclusters -h | awk '{print $1, $2, $4}' | grep -qx "$v $PG_CLUSTER online"; then
    check_port "$PG_PORT" postgres
    pg_ctlcluster "$v" "$PG_CLUSTER" start || die "pg_ctlcluster $v $PG_CLUSTER start failed (see /var/log/postgresql)."
  fi
  wait_for 60 PostgreSQL pg_isready -h 127.0.0.1 -p "$PG_PORT"
  local psql=(runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qtA)
  if [[ -z $("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'") ]]; then
    "${psql[@]}" -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD' CREATEDB"
  fi
  if [[ -z $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") ]]; then
    "${psql[@]}" -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
  fi
  PGPASSWORD=$PG_PASSWORD wait_for 20 'the studies database' \
    psql -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -qtAc 'SELECT 1'
}

print_env() {
  echo "export S2S_CLUSTER_PG_URL=$(pg_url)"
  echo "export SLURM_CONF=$CONF"
}

status() {
  local down=0 v
  v=$(pg_version)
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if running "$d"; then echo "$d: running"; else echo "$d: down"; down=1; fi
  done
  if sinfo -h -o '%n %t %c cpus %m MB' 2>/dev/null | grep -q .; then
    echo "node: $(sinfo -h -o '%n %t %c cpus %m MB' | head -1)"
  else
    echo 'node: unknown'; down=1
  fi
  if [[ -n $v ]] && pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
    echo "postgresql $v ($PG_CLUSTER): accepting connections at $(pg_url)"
  else
    echo "postgresql ($PG_CLUSTER): down"; down=1
  fi
  return $down
}

stop() {
  local v
  for d in slurmd slurmctld slurmdbd; do
    if running "$d"; then pkill -TERM -x "$d" || true; fi
  done
  for d in slurmd slurmctld slurmdbd; do
    for ((i = 0; i < 100; i++)); do running "$d" || break; sleep 0.1; done
  done
  if running mariadbd; then
    mariadb-admin --socket="$STATE/run/mariadb.sock" shutdown 2>/dev/null || pkill -TERM -x mariadbd || true
  fi
  v=$(pg_version)
  if [[ -n $v ]] && pg_lsclusters -h | awk '{print $1, $2, $4}' | grep -qx "$v $PG_CLUSTER online"; then
    pg_ctlcluster "$v" "$PG_CLUSTER" stop || true
  fi
  if running munged; then pkill -TERM -x munged || true; fi
  for ((i = 0; i < 100; i++)); do running munged || running mariadbd || break; sleep 0.1; done
  if [[ -e $CONF$BACKUP_SUFFIX ]]; then
    mv -f "$CONF$BACKUP_SUFFIX" "$CONF"
  elif [[ -e $CONF ]] && grep -q '^# written by s2s_jax' "$CONF"; then
    rm -f "$CONF"
  fi
  if [[ -e $DBD_CONF ]] && grep -q '^# written by s2s_jax' "$DBD_CONF"; then rm -f "$DBD_CONF"; fi
  log 'stopped.'
}

start() {
  mkdir -p "$STATE"
  install_packages
  write_slurm_conf
  start_munge
  start_mariadb
  start_slurm
  start_postgres
  log "ready: $(sinfo -h -o '%n %t, %c CPUs, %m MB' | head -1); PostgreSQL at $(pg_url)"
  print_env
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
