#!/usr/bin/env bash
# A two-node SLURM cluster on this one machine (munged, slurmctld, and two slurmd named n1 and
# n2), for tests/cluster/test_slurm.py: it submits one batch job, waits for it (at most
# ITK_JOB_TIMEOUT_S), prints its record and exits with the job's exit code, stopping the daemons
# it started. Run it as root inside a network namespace of its own:
#   unshare -n bash tests/cluster/slurm_harness.sh WORKDIR [sbatch arguments...]
# The daemons carry ITK_SLURM_DAEMON_MARKER instead of the caller's ITK_SLURM_TEST_MARKER, so
# only the job's processes carry the latter (the test looks for leftovers by it).
set -euo pipefail
work=$1
shift
ip link set lo up
# Slurm resolves addresses with AI_ADDRCONFIG, which does not count 127.0.0.1 as configured
# IPv4: a second loopback address does.
ip addr add 127.0.0.2/8 dev lo

mkdir -p "$work/state" "$work/spool-n1" "$work/spool-n2"
head -c 1024 /dev/urandom >"$work/munge.key"
chmod 600 "$work/munge.key"
host=$(hostname -s)
cat >"$work/slurm.conf" <<EOF
ClusterName=itk-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge.sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmctldPort=16817
SlurmdPort=16818
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd-%n.pid
SlurmdSpoolDir=$work/spool-%n
StateSaveLocation=$work/state
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd-%n.log
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=2 RealMemory=2000
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=2 RealMemory=2000
PartitionName=test Nodes=n1,n2 Default=YES MaxTime=30 State=UP
EOF
export SLURM_CONF=$work/slurm.conf

# shellcheck disable=SC2329  # called by the EXIT trap
stop_daemons() {
  for name in slurmd-n1 slurmd-n2 slurmctld munged; do
    if [ -s "$work/$name.pid" ]; then
      kill "$(cat "$work/$name.pid")" 2>/dev/null || true
    fi
  done
}
trap stop_daemons EXIT
daemon() {
  env -u ITK_SLURM_TEST_MARKER ITK_SLURM_DAEMON_MARKER="${ITK_SLURM_TEST_MARKER:-}" "$@"
}
daemon munged --force --socket="$work/munge.sock" --key-file="$work/munge.key" \
  --pid-file="$work/munged.pid" --log-file="$work/munged.log" --seed-file="$work/munged.seed"
daemon slurmctld -i
daemon slurmd -N n1
daemon slurmd -N n2

for _ in $(seq 100); do
  if [ "$(sinfo --noheader --states=idle --format=%D 2>/dev/null)" = 2 ]; then
    break
  fi
  sleep 0.2
done
sinfo
# Polled here rather than with `sbatch --wait`, whose polls grow to several seconds apart.
job=$(sbatch --parsable "$@")
job=${job%%;*}
deadline=$((SECONDS + ${ITK_JOB_TIMEOUT_S:-180}))
while :; do
  record=$(scontrol --oneliner show job "$job")
  case $record in
    *JobState=PENDING* | *JobState=CONFIGURING* | *JobState=RUNNING* | *JobState=COMPLETING*) ;;
    *) break ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    scancel "$job"
    echo "job $job still running after ${ITK_JOB_TIMEOUT_S:-180} s: cancelled" >&2
    exit 124
  fi
  sleep 0.2
done
echo "$record"
exit_code=$(sed -n 's/.* ExitCode=\([0-9]*\):.*/\1/p' <<<"$record")
case $record in
  *JobState=COMPLETED*) exit 0 ;;
  *) exit "${exit_code:-1}" ;;
esac
