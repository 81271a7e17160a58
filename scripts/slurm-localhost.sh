#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying `make test-matrix SLURM=1` and for the
# opt-in test tests/test_slurm.py. Debian's packages: munge for authentication, slurmctld (the
# controller) and slurmd (the node daemon), both on localhost. Needs root (apt-get, /etc/slurm).
#
#   sudo scripts/slurm-localhost.sh          # install if missing, configure, start; waits until idle
#   sudo scripts/slurm-localhost.sh stop     # stop the daemons
#
# Not for a real cluster: there, use its own Slurm (docs/test-matrix.md).
set -euo pipefail

if [[ "${1:-start}" == "stop" ]]; then
	pkill -x slurmd || true
	pkill -x slurmctld || true
	pkill -x munged || true
	exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "error: run as root (it installs packages and writes /etc/slurm)" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
	echo "installing slurm-wlm and munge (Debian packages) ..."
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

node=$(hostname -s)
cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
state=/var/spool/slurm-localhost
mkdir -p /etc/slurm "$state/ctld" "$state/d" /var/log/slurm /run/munge /var/lib/munge /var/log/munge

# munge: one key shared by the controller and the node (the same machine).
if [[ ! -s /etc/munge/munge.key ]]; then
	mkdir -p /etc/munge
	dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged 2>/dev/null || munged --force

cat >/etc/slurm/slurm.conf <<EOF
# Written by scripts/slurm-localhost.sh: one node, this machine.
ClusterName=localhost
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${state}/ctld
SlurmdSpoolDir=${state}/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups: this also runs inside containers and sandboxes.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory_mb} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
	if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
		sinfo
		exit 0
	fi
	sleep 1
done
echo "error: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
