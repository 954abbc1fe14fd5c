#!/usr/bin/env bash
# make demo: Redis through io.rrc.v1 on lab host a, a client on lab host
# client talking to it, and the figures. Leaves the machine as it found it
# (KEEP_LAB=1 keeps the lab up to look around).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LABSH=$HERE/../lab/lab.sh
export LAB=${LAB:-rrcdemo} LAB_SUBNET=${LAB_SUBNET:-10.76.0}
export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1
ID=redis-demo
A=$LAB_SUBNET.1

step() { printf '\n== %s\n' "$*"; }
lab() { "$LABSH" "$@"; }
cli() { lab exec client redis-cli -h "$A" "$@"; }

cleanup() {
	if [[ ${KEEP_LAB:-} == 1 ]]; then
		echo "demo: lab $LAB left up (make lab-down LAB=$LAB, or test/lab/lab.sh down)"
		return
	fi
	step "cleaning up"
	lab down
}
trap cleanup EXIT

step "bringing up the lab: hosts a and b (each its own containerd 2.x) and a client, on a bridge"
lab up

step "starting Redis on host a through io.rrc.v1"
echo "\$ ctr run -d --net-host --runtime io.rrc.v1 rrc.local/redis:latest $ID"
lab ctr a run -d --net-host --runtime io.rrc.v1 rrc.local/redis:latest "$ID"
for _ in $(seq 1 100); do
	[[ $(cli PING 2>/dev/null) == PONG ]] && break
	sleep 0.1
done
lab ctr a task ls
echo "\$ rrcctl status"
rrcctl -address "/run/$LAB/a/containerd.sock" -n "$LAB-a" status

step "the client ($LAB_SUBNET.100) talks to Redis on $A:6379"
echo "SET greeting hello -> $(cli SET greeting "hello from io.rrc.v1")"
echo "GET greeting       -> $(cli GET greeting)"
for _ in 1 2 3; do echo "INCR visits        -> $(cli INCR visits)"; done
echo "server: $(cli INFO server | grep -E '^(redis_version|process_id|tcp_port)' | tr -d '\r' | tr '\n' ' ')"

step "figures: redis-benchmark from the client, 1 client then 50 clients"
bench() { lab exec client redis-benchmark -h "$A" -q "$@" | tr '\r' '\n' | grep 'requests per second'; }
echo "1 client:";   bench -n 20000 -c 1 -t set,get
echo "50 clients:"; bench -n 100000 -c 50 -t set,get

step "stopping the container"
lab ctr a task kill "$ID"
for _ in $(seq 1 50); do
	lab ctr a task ls | grep -q "^$ID .*STOPPED" && break
	sleep 0.1
done
lab ctr a task delete "$ID" || true
lab ctr a container delete "$ID"
echo "demo: Redis served the client through io.rrc.v1. Replication and failover come next (see README)."
