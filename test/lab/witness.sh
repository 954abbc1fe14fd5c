# shellcheck shell=bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# The lab's witness and partitions, sourced by lab.sh (docs/LAB.md).
#
# LAB_WITNESS=1 at `up` adds host w (.3) and a three-member etcd cluster, one
# member per host a, b and w, each in its host's netns (its data dir on the
# host's disk, so a crashed and restarted host's member rejoins): a partition
# that isolates one host leaves the other two a quorum. etcd is the one
# contrib/setup/etcd.sh unpacks (ETCD_BIN overrides). Faster raft timing than
# etcd's default (heartbeat 50 ms, election 500 ms) lets leases of 1 s; with
# pre-vote, a member cut off and back does not depose the leader.
#
# Partitions are drops in the LAN's bridge (ebtables FORWARD), so that they
# cut everything between two hosts' ports, their containers' links included
# (ports named H, H-* or H.*, as crash counts them):
#   partition X Y [oneway]   drop frames X → Y (and Y → X unless oneway)
#   isolate X                drop every frame from and to X
#   heal                     remove every partition

ETCD_BIN=${ETCD_BIN:-/opt/rrc/etcd/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-$(dirname "$ETCD_BIN")/etcdctl}
WITNESS_MEMBERS="a b w"
witness_on() { [[ -e $RUNDIR/witness ]]; }
etcd_url() { echo "http://$(host_ip "$1"):$2"; }
witness_endpoints() {
	local h out=()
	for h in $WITNESS_MEMBERS; do out+=("$(etcd_url "$h" 2379)"); done
	(IFS=,; echo "${out[*]}")
}

start_etcd() {
	local h=$1 st log cluster="" m
	st=$(state "$h")
	log=$st/etcd.log
	if pgrep -f -- "--data-dir $(root "$h")/etcd" >/dev/null 2>&1; then
		return 0
	fi
	for m in $WITNESS_MEMBERS; do cluster+="${cluster:+,}$m=$(etcd_url "$m" 2380)"; done
	mkdir -p "$st" "$(root "$h")"
	say "etcd member $h: $(etcd_url "$h" 2379) (log $log)"
	echo "--- $(date -u +%FT%T.%NZ) lab.sh: start etcd" >>"$log"
	setsid nsenter --net="$(nspath "$h")" -- "$ETCD_BIN" --name "$h" --data-dir "$(root "$h")/etcd" \
		--listen-client-urls "$(etcd_url "$h" 2379)" --advertise-client-urls "$(etcd_url "$h" 2379)" \
		--listen-peer-urls "$(etcd_url "$h" 2380)" --initial-advertise-peer-urls "$(etcd_url "$h" 2380)" \
		--initial-cluster "$cluster" --initial-cluster-token "$LAB" --initial-cluster-state new \
		--heartbeat-interval 50 --election-timeout 500 --pre-vote --logger zap --log-outputs stderr \
		</dev/null >>"$log" 2>&1 9>&- &
}

# wait_witness: the cluster has a leader and every member answers.
wait_witness() {
	local i
	for i in $(seq 1 100); do
		if in_ns w "$ETCDCTL_BIN" --endpoints "$(witness_endpoints)" --command-timeout 1s endpoint health >/dev/null 2>&1; then
			say "witness: etcd healthy ($(witness_endpoints))"
			return 0
		fi
		sleep 0.2
	done
	in_ns w "$ETCDCTL_BIN" --endpoints "$(witness_endpoints)" --command-timeout 1s endpoint health >&2 || true
	die "the witness's etcd is not healthy after 20 s; see $(state a)/etcd.log"
}

witness_up() {
	[[ -x $ETCD_BIN && -x $ETCDCTL_BIN ]] || die "$ETCD_BIN not found: run contrib/setup/etcd.sh"
	touch "$RUNDIR/witness"
	ensure_host_net w
	local h
	for h in $WITNESS_MEMBERS; do start_etcd "$h"; done
	wait_witness
}

# lan_ebtables ARGS...: ebtables in the LAN namespace.
lan_ebtables() { ip netns exec "$LAN" ebtables "$@"; }

cmd_partition() {
	local x=$1 y=$2 oneway=${3:-}
	check_host "$x"
	check_host "$y"
	[[ -z $oneway || $oneway == oneway ]] || usage
	ns_exists lan || die "lab $LAB is not up"
	lan_ebtables -A FORWARD -i "$x+" -o "$y+" -j DROP
	if [[ -z $oneway ]]; then
		lan_ebtables -A FORWARD -i "$y+" -o "$x+" -j DROP
		say "partition: $x <-/-> $y"
	else
		say "partition: $x -/-> $y (one way)"
	fi
}

cmd_isolate() {
	local x=$1
	check_host "$x"
	ns_exists lan || die "lab $LAB is not up"
	lan_ebtables -A FORWARD -i "$x+" -j DROP
	lan_ebtables -A FORWARD -o "$x+" -j DROP
	say "partition: $x isolated"
}

cmd_heal() {
	ns_exists lan || die "lab $LAB is not up"
	lan_ebtables -F FORWARD
	say "partitions healed"
}
