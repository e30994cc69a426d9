#!/bin/bash
# A private one-node SLURM cluster on localhost, for testing scripts/slurm/pretrain.sbatch.
#
#   scripts/slurm/local_cluster.sh COMMAND [ARGS...]
#
# installs slurm-wlm and munge when they are missing (apt-get, as root), writes a slurm.conf
# for this host (one node, 2 CPUs, requeue allowed, private ports) and a munge key into a
# fresh temporary folder, starts munged, slurmctld and slurmd from there, waits for the node
# to be idle, runs COMMAND with SLURM_CONF (and SINCERE_SLURM_DIR, the folder) exported, and
# stops every daemon it started, whatever happens (the EXIT/INT/TERM trap kills them by their
# pid files, then checks that no slurmctld, slurmd, slurmstepd or munged started after this
# script is left: if one is, it is killed and the script fails). A system-wide SLURM or munge
# (/etc/slurm, /etc/munge, ports 6817/6818) is left alone: every path and port is private, and
# an install here does not start the packages' system-wide services.
#
# Exit status: COMMAND's; 77 when SLURM is missing and cannot be installed (not root, or no
# apt-get); 1 when the cluster did not come up or a daemon outlived the stop.
# Set KEEP_SLURM_DIR=1 to keep the folder (logs of the daemons) for a post-mortem.
set -u
PATH=$PATH:/usr/sbin:/sbin                # the daemons live in sbin, not always on a PATH

[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
say() { echo "local_cluster: $*" >&2; }

DAEMONS="slurmctld slurmd slurmstepd munged"
running() { local n; for n in $DAEMONS; do pgrep -x "$n"; done; }

# --- install ------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v pgrep >/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "SLURM is not installed and cannot be installed here (needs root and apt-get):" \
            "apt-get install slurm-wlm munge procps, then rerun"
        exit 77
    fi
    say "installing slurm-wlm, munge and procps (pgrep, ps) (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # the packages' own services (system-wide munge, slurmctld, slurmd) are not started: a
    # policy-rc.d that says no, for the install's duration only
    policy=
    trap '[ -n "$policy" ] && rm -f "$policy"' EXIT
    [ -e /usr/sbin/policy-rc.d ] || { policy=/usr/sbin/policy-rc.d;
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; }
    { apt-get install -y -q slurm-wlm munge procps ||
      { apt-get update -q && apt-get install -y -q slurm-wlm munge procps; }; } >/dev/null
    installed=$?
    [ -n "$policy" ] && rm -f "$policy"
    [ "$installed" = 0 ] || { say "apt-get install slurm-wlm munge procps failed"; exit 77; }
fi
# daemons already running (after the install, which starts none): not ours, never touched
BEFORE=" $(running | xargs) "
if [ "$(id -u)" != 0 ]; then
    say "the daemons run as root here (SlurmUser=root): run as root"
    exit 77
fi

# --- the private folder, and the guaranteed stop ------------------------------------------
DIR=$(mktemp -d "${TMPDIR:-/tmp}/sincere-slurm.XXXXXX")
chmod 700 "$DIR"
export SINCERE_SLURM_DIR=$DIR SLURM_CONF=$DIR/slurm.conf

ours() {    # live daemons started after this script began, and processes naming $DIR (jobs)
    local pid
    for pid in $( (running; pgrep -f -- "$DIR") | sort -u); do
        case "$BEFORE" in *" $pid "*) continue ;; esac
        case "$(ps -o stat= -p "$pid" 2>/dev/null)" in ''|Z*) continue ;; esac   # gone, zombie
        echo "$pid"
    done
}

stop_all() {
    local status=$? pid left n
    trap '' INT TERM
    if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
        scancel --quiet --user="$(id -un)" 2>/dev/null          # jobs of this cluster only
        for n in $(seq 60); do                                  # KillWait (10 s) and some
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5
        done
        scontrol shutdown >/dev/null 2>&1                       # slurmctld and slurmd
    fi
    for n in $(seq 100); do                                     # 20 s to exit by themselves
        [ -z "$(ours | grep -v -x "$(cat "$DIR/munged.pid" 2>/dev/null)")" ] && break
        sleep 0.2
    done
    for n in slurmd slurmctld munged; do                         # by pid file
        [ -f "$DIR/$n.pid" ] && kill -TERM "$(cat "$DIR/$n.pid")" 2>/dev/null
    done
    for n in $(seq 50); do [ -z "$(ours)" ] && break; sleep 0.2; done
    left=$(ours)
    if [ -n "$left" ]; then
        say "still running after the stop, killed:" \
            "$(ps -o pid=,comm= -p "$(echo $left | tr ' ' ',')" | xargs)"
        for pid in $left; do kill -KILL "$pid" 2>/dev/null; done
        status=1
        for n in $(seq 25); do [ -z "$(ours)" ] && break; sleep 0.2; done
        if [ -n "$(ours)" ]; then say "could not stop: $(ours | xargs)"; exit 1; fi
    fi
    for n in $(seq 150); do     # the daemons' parent is PID 1: wait for it to reap them too,
        new=                    # so that no zombie slurmd & co. is listed after this script
        for pid in $(running); do case "$BEFORE" in *" $pid "*) ;; *) new=1 ;; esac; done
        [ -z "$new" ] && break; sleep 0.2
    done
    if [ "${KEEP_SLURM_DIR:-0}" = 1 ] || [ "$status" != 0 ]; then
        [ "$status" != 0 ] && for n in slurmctld slurmd munged; do
            [ -s "$DIR/$n.log" ] && { say "--- tail of $DIR/$n.log"; tail -n 15 "$DIR/$n.log" >&2; }
        done
        say "daemons' logs kept in $DIR"
    else
        rm -rf "$DIR"
    fi
    say "stopped; no slurmctld, slurmd, slurmstepd or munged of this cluster is running"
    exit "$status"
}
interrupted() {      # INT or TERM: end COMMAND, then the EXIT trap stops the daemons
    trap '' INT TERM
    [ -n "${child:-}" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
    exit "$1"
}
child=
trap stop_all EXIT
trap 'interrupted 130' INT
trap 'interrupted 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- munge ----------------------------------------------------------------------------------
mungekey --create --keyfile="$DIR/munge.key" --force >/dev/null 2>&1 ||
    dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge.key"
munged --force --key-file="$DIR/munge.key" --socket="$DIR/munge.sock" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge.seed" ||
    { say "munged did not start"; exit 1; }

# --- slurm.conf -----------------------------------------------------------------------------
NODE=$(hostname -s)
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
[ "$CTLD_PORT" != "$SLURMD_PORT" ] || SLURMD_PORT=$(free_port)
mkdir -p "$DIR/state" "$DIR/spool"
cat > "$SLURM_CONF" <<EOF
# one-node test cluster written by scripts/slurm/local_cluster.sh
ClusterName=sincere$$
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again cred_expire + 1 s later (default 120 s); the schedulers look
# at pending jobs every 5 s (defaults 60 s and 30 s): a shorter test, the same behaviour
AuthInfo=socket=$DIR/munge.sock,cred_expire=30
SchedulerParameters=sched_interval=5,bf_interval=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
SlurmdParameters=config_overrides
SlurmdTimeout=60
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# --- the daemons ------------------------------------------------------------------------------
slurmctld -i -f "$SLURM_CONF" || { say "slurmctld did not start"; exit 1; }
slurmd -f "$SLURM_CONF" -N "$NODE" || { say "slurmd did not start"; exit 1; }
for n in $(seq 120); do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null)
    [ "$state" = idle ] && break
    sleep 0.5
done
if [ "$state" != idle ]; then say "node $NODE is '$state', not idle, after 60 s"; exit 1; fi
say "SLURM $(sinfo -V | awk '{print $2}') up: cluster sincere$$, node $NODE (2 CPUs), ports" \
    "$CTLD_PORT/$SLURMD_PORT, folder $DIR"

"$@" &               # in the background, so that a signal to this script is handled at once
child=$!
wait "$child"
