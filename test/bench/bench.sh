#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# make bench: measurements, side by side in one run, written to
# docs/BENCHMARKS.md. Not part of make test; never a timed assertion: the
# project's targets are computed and reported (met / not met), not asserted.
#
#   1. Redis (100,000 records of 100 bytes) through containerd in the lab,
#      redis-benchmark from the lab client, in rounds that alternate
#      io.containerd.runc.v2 (unreplicated), io.rrc.v1 without annotations,
#      and io.rrc.v1 epoch mode (primary on host a, backup on host b, service
#      address) at each epoch length of BENCH_EPOCHS (a length with "-full":
#      the shim's incremental_memory off, every dump copies all memory), each preceded by a
#      runc.v2 round: single-client latency (mean, p99), 50-client
#      throughput; from the primary's status file: pause per epoch, bytes
#      per epoch, ack latency, skipped epochs; then `lab.sh crash a` and, from
#      the backup's status file, the failover split (detection, restore,
#      network).
#   2. Checkpoint pause per epoch for Redis with 100,000 records (and 1 M and
#      10 M with BENCH_FULL=1): io.rrc.v1's checkpointer against
#      `runc checkpoint --leave-running` (criu.TestMeasureCheckpointPause,
#      built with the build tag measure only).
#   3. The web server (lighttpd) unreplicated and in epoch mode (web_section).
#   4. Hybrid mode against epoch mode and runc.v2 (test/bench/hybrid.sh):
#      Redis and memcached with 100,000 records, single-client latency to
#      p99.9 and 50-client throughput (test/bench/kvclient), the shim's CPU
#      time per request, log bytes per second, pause per checkpoint, and a
#      failover under steady load split into detection, restore, replay and
#      network; pictures (test/plot) in bench/ beside the document: the
#      latency distributions side by side and each configuration's client
#      across its failover.
#   5. An idle replicated Redis (test/bench/idle.sh): the whole pair's CPU
#      with io.rrc.skip-idle false and true.
#   6. Not by default (BENCH_PARTS=soak): replication under a CPU-saturating
#      neighbour for BENCH_SOAK_MINUTES (test/bench/soak.sh): false failovers
#      and degradations, then a real failure's detection.
#
# Env:
#   BENCH_ROUNDS   rounds of part 1 (default 3)
#   BENCH_EPOCHS   epoch lengths of part 1 (default "50ms 100ms 200ms 100ms-full")
#   BENCH_SECONDS  about how long each replicated 1-client redis-benchmark test
#                  runs, 50 clients half that (default 15); the request counts
#                  follow from it and the commit cycle measured just before
#   BENCH_FULL=1   part 2 also at 1 M and 10 M records
#   BENCH_N10M     checkpoints at 10 M records (default 10; 20 at the others)
#   BENCH_OUT      the document (default docs/BENCHMARKS.md)
#   BENCH_PARTS    which parts run (default "redis pause web hybrid idle"); without
#                  "redis" only the sections of the parts that ran are replaced
#   BENCH_WEB_ROUNDS  rounds of part 3 (default 3)
#   BENCH_WEB_SECONDS how long the 8 clients fetch per measurement (default 10)
#   BENCH_HYBRID   configurations of part 4 (default "epoch-100ms hybrid-1s hybrid-300ms": the
#                  first hybrid one is the default interval, whose targets are computed)
#   BENCH_HYBRID_ROUNDS rounds of part 4 (default 2)
#   BENCH_HYBRID_WORKLOADS workloads of part 4 (default "redis memcached")
#   BENCH_IDLE_ROUNDS  rounds of part 5 (default 2)
#   BENCH_IDLE_SECONDS how long the pair stays idle per round (default 20)
#   BENCH_SOAK_MINUTES how long part 6 runs (default 60)
# Takes about 15 min with the defaults, 18 min with BENCH_FULL=1, on 2 cores.
# The lab is LAB=rrcbench, LAB_SUBNET=10.87.0; it is taken down at the end,
# also on failure or interrupt.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LABSH=$REPO/test/lab/lab.sh
export LAB=${LAB:-rrcbench} LAB_SUBNET=${LAB_SUBNET:-10.87.0}
export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$PATH
ROUNDS=${BENCH_ROUNDS:-3}
EPOCHS=${BENCH_EPOCHS:-50ms 100ms 200ms 100ms-full}
SECS=${BENCH_SECONDS:-15}
FULL=${BENCH_FULL:-0}
N10M=${BENCH_N10M:-10}
OUT=${BENCH_OUT:-$REPO/docs/BENCHMARKS.md}
PARTS=${BENCH_PARTS:-redis pause web hybrid idle}
HYB_CONFIGS=${BENCH_HYBRID:-epoch-100ms hybrid-1s hybrid-300ms}
HYB_ROUNDS=${BENCH_HYBRID_ROUNDS:-2}
WEB_ROUNDS=${BENCH_WEB_ROUNDS:-3}
WEB_SECS=${BENCH_WEB_SECONDS:-10}
part() { [[ " $PARTS " == *" $1 "* ]]; }
KEYS=100000
for e in $EPOCHS; do
	[[ $e =~ ^[0-9]+(\.[0-9]+)?(ms|s)(-full)?$ ]] || { echo "bench: epoch length '$e': use ms or s, e.g. 100ms or 100ms-full" >&2; exit 2; }
done
A=$LAB_SUBNET.1 B=$LAB_SUBNET.2
SVC=$LAB_SUBNET.200  # the replicated Redis's service address
BASE=$LAB_SUBNET.201 # the unreplicated Redis's address (its own netns on a)
IMAGE=rrc.local/redis:latest
# The image's command (contrib/imagebuild/images.sh) plus DEBUG, for DEBUG POPULATE.
REDIS=(redis-server --bind 0.0.0.0 --protected-mode no --save "" --appendonly no --enable-debug-command yes)
WORK=$(mktemp -d /tmp/rrcbench.XXXXXX)
REC=$WORK/records.tsv # config round metric value
NOTES=$WORK/notes     # rounds that did not go as they should
DETAILS=$WORK/details # per-round lines for the doc
: >"$REC"
: >"$NOTES"
: >"$DETAILS"
T0=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

say() { echo "bench: $(date -u +%H:%M:%S) $*" >&2; }
lab() { "$LABSH" "$@"; }
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	say "cleaning up: lab $LAB down"
	LAB_QUIET=1 lab down >/dev/null 2>&1 || true
	rm -rf "$WORK"
	if ((rc == 130)); then say "interrupted, lab removed"
	elif ((rc != 0)); then say "FAILED (exit $rc), lab removed"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$REC"; }
note() {
	say "NOTE: $*"
	echo "$*" >>"$NOTES"
}
# section_notes CONFIGS: the notes of the rounds of the configurations the
# extended regular expression CONFIGS matches, as a list under "Notes:".
section_notes() {
	grep -qE "^round [0-9]+, ($1):" "$NOTES" 2>/dev/null || return 0
	echo "Notes:"
	echo
	grep -E "^round [0-9]+, ($1):" "$NOTES" | sed 's/^/* /'
	echo
}
# round_note CONFIG ROUND TEXT: a note, and the round counted as a problem.
round_note() {
	rec "$1" "$2" problem 1
	note "round $2, $1: $3"
}
# ms DURATION: a Go duration with unit ms or s (and an optional -full), in milliseconds.
ms() {
	case ${1%-full} in
	*ms) local v=${1%-full}; echo "${v%ms}" ;;
	*s) local v=${1%-full}; awk -v s="${v%s}" 'BEGIN { print s * 1000 }' ;;
	*) echo "bench: epoch length $1: use ms or s" >&2; exit 2 ;;
	esac
}

# csv_field FILE TEST COLUMN: a column of redis-benchmark --csv output.
csv_field() {
	awk -F'"' -v t="$2" -v c="$3" '
		NR == 1 { for (i = 2; i <= NF; i += 2) col[$i] = i; next }
		$2 == t { print $(col[c]) }' "$1"
}

# benchmark CONFIG ROUND HOST N1 N50: redis-benchmark from the lab client,
# 1 client (N1 requests per test) and 50 clients (N50), GET and SET.
benchmark() {
	local cfg=$1 round=$2 ip=$3 n1=$4 n50=$5 t m
	lab exec client redis-benchmark -h "$ip" --csv -n "$n1" -c 1 -t get,set >"$WORK/$cfg.$round.c1.csv"
	[[ ${SNAP_AFTER_C1:-} ]] && $SNAP_AFTER_C1
	lab exec client redis-benchmark -h "$ip" --csv -n "$n50" -c 50 -t get,set >"$WORK/$cfg.$round.c50.csv"
	for t in GET SET; do
		for m in avg_latency_ms p99_latency_ms; do
			rec "$cfg" "$round" "$t.c1.$m" "$(csv_field "$WORK/$cfg.$round.c1.csv" "$t" "$m")"
		done
		rec "$cfg" "$round" "$t.c50.rps" "$(csv_field "$WORK/$cfg.$round.c50.csv" "$t" rps)"
	done
}

wait_ping() { # IP SECONDS
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[[ $(lab exec client redis-cli -h "$1" PING 2>/dev/null) == PONG ]] && return 0
		sleep 0.1
	done
	return 1
}

# load IP: 100,000 records of 100 bytes (key:0 .. key:99999) with DEBUG
# POPULATE: one request, where redis-cli --pipe takes ~25 s under output
# commit (the replies, held per epoch, throttle the client's window).
load() {
	local n
	n=$(lab exec client redis-cli -h "$1" DEBUG POPULATE "$KEYS" key 100 2>&1)
	[[ $n == OK ]] || { echo "bench: DEBUG POPULATE: $n" >&2; return 1; }
	n=$(lab exec client redis-cli -h "$1" DBSIZE)
	[[ $n -ge $KEYS ]] || { echo "bench: dbsize $n after the load" >&2; return 1; }
}

# --- setup --------------------------------------------------------------------

say "building containerd-shim-rrc-v1, rrcctl, rrc-uffd and criu-written.so from this tree into $WORK/bin"
for c in containerd-shim-rrc-v1 rrcctl rrc-uffd; do
	(cd "$REPO" && go build -o "$WORK/bin/$c" "./cmd/$c")
done
(cd "$REPO" && go build -o "$WORK/bin/webclient" ./test/bench/webclient)
(cd "$REPO" && go build -o "$WORK/bin/kvclient" ./test/bench/kvclient)
(cd "$REPO" && go build -o "$WORK/bin/plot" ./test/plot)
# The pictures go beside the document, in bench/ (the document links them).
PICTURES=$(dirname "$OUT")/bench
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$WORK/bin/criu-written.so" "$REPO/contrib/criu-written/criu-written.c" -ldl
RRCCTL=$WORK/bin/rrcctl
"$RRCCTL" pki -dir "$WORK/pki" -name "$A" -name "$B" >/dev/null
# shim_config HOST INCREMENTAL: the host's shim configuration (read by each new shim).
shim_config() {
	local h=$1 ip st
	ip=$([[ $h == a ]] && echo "$A" || echo "$B")
	st=/run/$LAB/$h/rrc
	cat >"$WORK/$h.toml" <<TOML
state_dir = "$st"
image_dir = "$st/images"
checkpoint_dir = "$st/checkpoints"
incremental_memory = $2
criu_written_lib = "$WORK/bin/criu-written.so"
uffd_helper = "$WORK/bin/rrc-uffd"

[peer_tls]
ca_file = "$WORK/pki/ca.pem"
cert_file = "$WORK/pki/$ip.pem"
key_file = "$WORK/pki/$ip-key.pem"
TOML
}
shim_config a true
shim_config b true
export LAB_SHIM_PATH=$WORK/bin LAB_SHIM_CONFIG=$WORK/@HOST@.toml

lab_fresh() {
	LAB_QUIET=1 lab down >/dev/null 2>&1 || true
	LAB_QUIET=1 lab up >/dev/null 2>&1
}

# --- unreplicated rounds --------------------------------------------------------

# base_netns: the unreplicated Redis's network namespace on host a, reached
# the way the replicated one is: a macvlan of a's eth0 (mode bridge) with
# its own address, what the shim makes for io.rrc.service-ip. Bind-mounted
# under a's state dir, so lab.sh down removes it.
BASE_NS=/run/$LAB/a/bench/redis-net
base_netns() {
	grep -qF " $BASE_NS " /proc/self/mountinfo && return 0
	mkdir -p "$(dirname "$BASE_NS")"
	touch "$BASE_NS"
	unshare --net="$BASE_NS" true
	lab exec a ip link add link eth0 name bsvc0 type macvlan mode bridge
	lab exec a ip link set dev bsvc0 netns "$BASE_NS"
	nsenter --net="$BASE_NS" sh -c "ip link set lo up && ip link set bsvc0 name eth0 &&
		ip addr add $BASE/24 dev eth0 && ip link set eth0 up"
}

# unrep_round RUNTIME CONFIG ROUND: Redis without replication.
unrep_round() {
	local rt=$1 cfg=$2 round=$3 id=plain-$RANDOM
	say "round ${round%%.*}/$ROUNDS: $cfg ($rt, unreplicated, $BASE)"
	base_netns || { round_note "$cfg" "$round" "could not make its network namespace"; return 1; }
	lab ctr a run -d --runtime "$rt" --with-ns "network:$BASE_NS" "$IMAGE" "$id" "${REDIS[@]}" >/dev/null ||
		{ round_note "$cfg" "$round" "ctr run failed"; return 1; }
	wait_ping "$BASE" 10 || { round_note "$cfg" "$round" "Redis did not answer"; return 1; }
	load "$BASE" || { round_note "$cfg" "$round" "loading the records failed"; return 1; }
	benchmark "$cfg" "$round" "$BASE" 50000 200000
	plain_stop "$id"
}

# --- replicated rounds ----------------------------------------------------------

status_file() { echo "/run/$LAB/$1/rrc/status/$LAB-$1/$2.json"; }
# wait_status HOST ID JQ-CONDITION SECONDS
wait_status() {
	local f i
	f=$(status_file "$1" "$2")
	for ((i = 0; i < $4 * 10; i++)); do
		jq -e "$3" "$f" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
rrcctl_status() { "$RRCCTL" -address "/run/$LAB/$1/containerd.sock" -n "$LAB-$1" -config "$WORK/$1.toml" status; }
state_of() { jq -r '.engine.state + (if .engine.reason then " (" + .engine.reason + ")" else "" end)' "$(status_file "$1" "$2")" 2>/dev/null || echo "no status file"; }

# snap ID TAG: the primary's status file now, kept as WORK/<cfg>.<round>.TAG.json.
snap() { cp "$(status_file a "$1")" "$WORK/$CUR.$2.json"; }

# start_pair CONFIG ROUND ID IMAGE [ANNOTATION ARGS...] -- [COMMAND...]: the
# backup on b, then the primary on a, replicated at $SVC; waits until both
# are in sync (a round note and 1 if not).
start_pair() {
	local cfg=$1 round=$2 id=$3 image=$4 extra=() cmd=()
	shift 4
	while (($#)) && [[ $1 != -- ]]; do extra+=("$1"); shift; done
	(($#)) && shift && cmd=("$@")
	local common=(--annotation "io.rrc.service-ip=$SVC/24" --annotation io.rrc.service-link=eth0 "${extra[@]}")
	lab ctr b run -d --runtime io.rrc.v1 --annotation io.rrc.role=backup --annotation "io.rrc.listen=$B:7100" \
		--annotation "io.rrc.peer-name=$A" "${common[@]}" "$image" "$id" "${cmd[@]}" >/dev/null ||
		{ round_note "$cfg" "$round" "ctr run of the backup on b failed"; return 1; }
	lab ctr a run -d --runtime io.rrc.v1 --annotation io.rrc.role=primary --annotation "io.rrc.peer=$B:7100" \
		"${common[@]}" "$image" "$id" "${cmd[@]}" >/dev/null ||
		{ round_note "$cfg" "$round" "ctr run of the primary on a failed"; return 1; }
	if ! wait_status a "$id" '.engine.state == "in-sync"' 60 || ! wait_status b "$id" '.engine.state == "in-sync"' 20; then
		round_note "$cfg" "$round" "the pair did not get in sync (a: $(state_of a "$id"); b: $(state_of b "$id"))"
		return 1
	fi
}

# plain_stop ID: kills and deletes an unreplicated container on a.
plain_stop() {
	lab ctr a task kill -s KILL "$1" >/dev/null
	for _ in $(seq 1 50); do lab ctr a task delete "$1" >/dev/null 2>&1 && break; sleep 0.1; done
	lab ctr a container delete "$1" >/dev/null
}

# epoch_round EPOCH ROUND: Redis replicated a -> b, benchmark, crash a,
# failover on b; leaves a lab to be refreshed.
epoch_round() {
	local e=${1%-full} round=$2 id=rep$RANDOM n1 s f c0 c1 cycle incr=true
	local cfg=$1
	[[ $cfg == *-full ]] && incr=false
	shim_config a "$incr"
	say "round $round/$ROUNDS: io.rrc.v1 epoch mode, epoch $e, incremental_memory $incr (backup on b, primary on a, service $SVC)"
	# Every tick a checkpoint: the commit cycle is measured idle.
	start_pair "$cfg" "$round" "$id" "$IMAGE" --annotation "io.rrc.epoch=$e" --annotation io.rrc.skip-idle=false -- "${REDIS[@]}" || return 1
	wait_ping "$SVC" 20 || { round_note "$cfg" "$round" "Redis did not answer on $SVC"; return 1; }
	say "  in sync; loading $KEYS records"
	load "$SVC" || { round_note "$cfg" "$round" "loading the records failed"; return 1; }
	# Under output commit a single client gets one reply per committed
	# epoch; epochs are skipped while the previous checkpoint is still being
	# sent, so the request counts follow the commit cycle measured here
	# (loaded, idle) rather than the epoch length.
	CUR=$cfg.$round
	sleep 1
	snap "$id" pre
	c0=$(jq .engine.committed_epoch "$WORK/$CUR.pre.json")
	sleep 3
	c1=$(jq .engine.committed_epoch "$(status_file a "$id")")
	cycle=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print (b > a) ? 3000 / (b - a) : 1000 }')
	rec "$cfg" "$round" cycle "$cycle"
	n1=$(awk -v s="$SECS" -v c="$cycle" 'BEGIN { n = int(s * 1000 / c); print (n < 30) ? 30 : n }')
	say "  commit cycle $(printf %.0f "$cycle") ms; redis-benchmark: 1 client $n1 requests, 50 clients $((n1 * 25)) requests (GET and SET each)"
	SNAP_AFTER_C1="snap $id c1" benchmark "$cfg" "$round" "$SVC" "$n1" $((n1 * 25))
	snap "$id" c50
	rrcctl_status a >"$WORK/$CUR.rrcctl-a" 2>&1 || true
	s=$WORK/$CUR.c1.json
	rec "$cfg" "$round" pause1.mean "$(jq .engine.pause_ms.mean "$s")"
	rec "$cfg" "$round" pause1.p90 "$(jq .engine.pause_ms.p90 "$s")"
	rec "$cfg" "$round" ack1.mean "$(jq .engine.ack_ms.mean "$s")"
	rec "$cfg" "$round" ack1.p90 "$(jq .engine.ack_ms.p90 "$s")"
	rec "$cfg" "$round" bytes1.mean "$(jq .engine.bytes_per_epoch.mean "$s")"
	rec "$cfg" "$round" sent1.mean "$(jq '.engine.sent_bytes_per_epoch.mean // 0' "$s")"
	rec "$cfg" "$round" copied1.mean "$(jq '.engine.memory_copied_bytes_per_epoch.mean // 0' "$s")"
	s=$WORK/$CUR.c50.json
	rec "$cfg" "$round" pause50.mean "$(jq .engine.pause_ms.mean "$s")"
	rec "$cfg" "$round" pause50.p90 "$(jq .engine.pause_ms.p90 "$s")"
	rec "$cfg" "$round" ack50.mean "$(jq .engine.ack_ms.mean "$s")"
	rec "$cfg" "$round" bytes50.mean "$(jq .engine.bytes_per_epoch.mean "$s")"
	rec "$cfg" "$round" sent50.mean "$(jq '.engine.sent_bytes_per_epoch.mean // 0' "$s")"
	rec "$cfg" "$round" copied50.mean "$(jq '.engine.memory_copied_bytes_per_epoch.mean // 0' "$s")"
	local epochs skipped failed repairs nacks st e0 s0
	read -r epochs skipped failed repairs nacks st < <(jq -r '.engine | "\(.epochs // 0) \(.skipped_epochs // 0) \(.failed_epochs // 0) \(.repairs // 0) \(.nacks // 0) \(.state)"' "$s")
	read -r e0 s0 < <(jq -r '.engine | "\(.epochs // 0) \(.skipped_epochs // 0)"' "$WORK/$CUR.pre.json")
	epochs=$((epochs - e0)) skipped=$((skipped - s0))
	rec "$cfg" "$round" epochs "$epochs"
	rec "$cfg" "$round" skipped "$skipped"
	rec "$cfg" "$round" skipped.pct "$(awk -v s="$skipped" -v e="$epochs" 'BEGIN { print (s + e) ? 100 * s / (s + e) : 0 }')"
	rec "$cfg" "$round" failed "$failed"
	rec "$cfg" "$round" repairs "$repairs"
	if [[ $st != in-sync || $repairs != 0 || $failed != 0 || $nacks != 0 ]]; then
		round_note "$cfg" "$round" "primary after the benchmark: state $(state_of a "$id"), repairs $repairs, failed epochs $failed, nacks $nacks"
	fi

	say "  crash a"
	lab crash a >/dev/null 2>&1
	if ! wait_status b "$id" '.engine.state == "primary-after-failover"' 30; then
		round_note "$cfg" "$round" "no failover: b's state $(state_of b "$id") 30 s after the crash"
		return 1
	fi
	f=$(status_file b "$id")
	rrcctl_status b >"$WORK/$CUR.rrcctl-b" 2>&1 || true
	local det stop prep rest net tot
	read -r det stop prep rest net tot < <(jq -r '.engine.failover | "\(.detection_ms) \(.stop_ms) \(.prepare_ms) \(.restore_ms) \(.network_ms) \(.total_ms)"' "$f")
	rec "$cfg" "$round" fo.detection "$det"
	rec "$cfg" "$round" fo.stopprep "$(awk -v a="$stop" -v b="$prep" 'BEGIN { print a + b }')"
	rec "$cfg" "$round" fo.restore "$rest"
	rec "$cfg" "$round" fo.network "$net"
	rec "$cfg" "$round" fo.total "$tot"
	rec "$cfg" "$round" fo.recovery "$(awk -v t="$tot" -v d="$det" 'BEGIN { print t - d }')"
	local n
	n=$(lab exec client timeout 10 redis-cli -h "$SVC" DBSIZE 2>/dev/null || echo "?")
	rec "$cfg" "$round" fo.dbsize "$n"
	[[ $n =~ ^[0-9]+$ && $n -ge $KEYS ]] || round_note "$cfg" "$round" "after the failover DBSIZE on $SVC is '$n', want >= $KEYS"
	say "  failover: detection $det ms, restore $rest ms, network $net ms, total $tot ms; dbsize $n"
	{
		echo "round $round, epoch $cfg: primary (rrcctl status on a, after the benchmark):"
		grep -v '^CONTAINER' "$WORK/$CUR.rrcctl-a" | sed 's/^/  /'
		echo "  backup after lab.sh crash a (rrcctl status on b):"
		grep -v '^CONTAINER' "$WORK/$CUR.rrcctl-b" | sed 's/^/  /'
	} >>"$DETAILS"
}

# --- part 1: Redis through containerd -------------------------------------------

PART1_S=0
if part redis; then
say "lab up ($LAB, $LAB_SUBNET.0/24); $ROUNDS rounds of: runc.v2, io.rrc.v1 unannotated, then per epoch in [$EPOCHS]: runc.v2 + io.rrc.v1 epoch mode"
lab_fresh
for round in $(seq 1 "$ROUNDS"); do
	unrep_round io.containerd.runc.v2 runc "$round" || lab_fresh
	unrep_round io.rrc.v1 rrcplain "$round" || lab_fresh
	for e in $EPOCHS; do
		if [[ $e != "${EPOCHS%% *}" ]]; then unrep_round io.containerd.runc.v2 runc "$round.$e" || lab_fresh; fi
		epoch_round "$e" "$round" || true
		say "  lab down and up for the next round"
		lab_fresh
	done
done
LAB_QUIET=1 lab down >/dev/null 2>&1
PART1_S=$((SECONDS - T0))
fi


# --- part 3: the web server (issue 17) --------------------------------------------

WEBIMAGE=rrc.local/lighttpd:latest
webclient() { lab exec client "$WORK/bin/webclient" "$@"; }
wait_http() { # IP SECONDS
	local i
	for ((i = 0; i < $2 * 4; i++)); do
		webclient -addr "$1:80" -conns 1 -seconds 0.2 >/dev/null 2>&1 && return 0
		sleep 0.25
	done
	return 1
}
# web_measure CONFIG ROUND IP: the 8 clients, then the download.
web_measure() {
	local cfg=$1 round=$2 ip=$3 j
	j=$WORK/$cfg.$round.web.json
	webclient -addr "$ip:80" -conns 8 -seconds "$WEB_SECS" >"$j" 2>/dev/null ||
		round_note "$cfg" "$round" "web clients: $(jq -r .error "$j" 2>/dev/null)"
	rec "$cfg" "$round" web.rps "$(jq .rps "$j")"
	rec "$cfg" "$round" web.mean "$(jq .mean_ms "$j")"
	rec "$cfg" "$round" web.p99 "$(jq .p99_ms "$j")"
	j=$WORK/$cfg.$round.dl.json
	webclient -addr "$ip:80" -download >"$j" 2>/dev/null ||
		round_note "$cfg" "$round" "download: $(jq -r .error "$j" 2>/dev/null)"
	rec "$cfg" "$round" web.dl "$(jq .seconds "$j")"
	say "  $(jq -r '"\(.responses) responses, \(.rps | floor)/s, mean \(.mean_ms | floor) ms, p99 \(.p99_ms | floor) ms"' "$WORK/$cfg.$round.web.json"); 10 MB in $(jq .seconds "$j") s"
}
web_unrep_round() {
	local round=$1 id=web-$RANDOM cfg=web-runc
	say "web round $round/$WEB_ROUNDS: lighttpd unreplicated (io.containerd.runc.v2, $BASE)"
	base_netns || { round_note "$cfg" "$round" "could not make its network namespace"; return 1; }
	lab ctr a run -d --runtime io.containerd.runc.v2 --with-ns "network:$BASE_NS" "$WEBIMAGE" "$id" >/dev/null ||
		{ round_note "$cfg" "$round" "ctr run failed"; return 1; }
	wait_http "$BASE" 10 || { round_note "$cfg" "$round" "lighttpd did not answer"; return 1; }
	web_measure "$cfg" "$round" "$BASE"
	plain_stop "$id"
}
web_epoch_round() {
	local round=$1 id=webr$RANDOM cfg=web-100ms f det rest tot j
	say "web round $round/$WEB_ROUNDS: lighttpd in epoch mode at 100 ms (backup on b, primary on a, $SVC)"
	start_pair "$cfg" "$round" "$id" "$WEBIMAGE" --annotation io.rrc.epoch=100ms || return 1
	wait_http "$SVC" 20 || { round_note "$cfg" "$round" "lighttpd did not answer on $SVC"; return 1; }
	web_measure "$cfg" "$round" "$SVC"
	cp "$(status_file a "$id")" "$WORK/$cfg.$round.primary.json"
	rec "$cfg" "$round" web.pause "$(jq .engine.pause_ms.mean "$WORK/$cfg.$round.primary.json")"
	# The failover: the 8 clients run 8 s, a crashes 3 s in.
	j=$WORK/$cfg.$round.fo.json
	webclient -addr "$SVC:80" -conns 8 -seconds 8 >"$j" 2>/dev/null &
	local wc=$!
	sleep 3
	lab crash a >/dev/null 2>&1
	wait "$wc" || round_note "$cfg" "$round" "web clients across the failover: $(jq -r .error "$j" 2>/dev/null)"
	if ! wait_status b "$id" '.engine.state == "primary-after-failover"' 30; then
		round_note "$cfg" "$round" "no failover: b's state $(state_of b "$id")"
		return 1
	fi
	f=$(status_file b "$id")
	read -r det rest tot < <(jq -r '.engine.failover | "\(.detection_ms) \(.restore_ms) \(.total_ms)"' "$f")
	rec "$cfg" "$round" fo.detection "$det"
	rec "$cfg" "$round" fo.restore "$rest"
	rec "$cfg" "$round" fo.total "$tot"
	rec "$cfg" "$round" fo.wait "$(jq .longest_gap_ms "$j")"
	rec "$cfg" "$round" fo.bound "$(awk -v d="$det" -v r="$rest" 'BEGIN { print d + r + 500 }')"
	# served after the address came up: the gap's end against last heard + total
	rec "$cfg" "$round" fo.afterup "$(jq -r --argjson tot "$tot" '.engine.failover.last_heard' "$f" | xargs -I{} date -d {} +%s.%N |
		awk -v e="$(jq .gap_end_unix_ms "$j")" -v t="$tot" '{ print e - ($1 * 1000 + t) }')"
	say "  failover: detection $det ms, restore $rest ms; longest client wait $(jq .longest_gap_ms "$j") ms"
}
if part web; then
	say "web: lab up ($LAB, $LAB_SUBNET.0/24); $WEB_ROUNDS rounds of: runc.v2, io.rrc.v1 epoch mode at 100 ms"
	lab_fresh
	for round in $(seq 1 "$WEB_ROUNDS"); do
		web_unrep_round "$round" || lab_fresh
		web_epoch_round "$round" || true
		lab_fresh
	done
	LAB_QUIET=1 lab down >/dev/null 2>&1
fi

# --- part 4: hybrid mode against epoch mode (issue 14) ----------------------------

# shell-source the part: its rounds and its section of the document.
source "$HERE/hybrid.sh"
if part hybrid; then
	say "hybrid: lab up ($LAB, $LAB_SUBNET.0/24); $HYB_ROUNDS rounds of, for each of [$HYB_WORKLOADS]: runc.v2, then per configuration in [$HYB_CONFIGS]"
	lab_fresh
	hyb_rounds
	LAB_QUIET=1 lab down >/dev/null 2>&1
fi

# --- part 5: an idle replicated container (issue 18) ---------------------------

source "$HERE/idle.sh"
if part idle; then
	say "idle: lab up ($LAB, $LAB_SUBNET.0/24); $IDLE_ROUNDS rounds of [$IDLE_CONFIGS]"
	lab_fresh
	idle_rounds
	LAB_QUIET=1 lab down >/dev/null 2>&1
fi

# --- part 6: false failovers under a CPU-saturating neighbour (issue 15) --------

source "$HERE/soak.sh"
if part soak; then
	say "soak: lab up ($LAB, $LAB_SUBNET.0/24); $SOAK_MINUTES min"
	lab_fresh
	soak_run || true
	LAB_QUIET=1 lab down >/dev/null 2>&1
fi

# --- part 2: checkpoint pause vs records -----------------------------------------

pause_run() { # KEYS N
	say "checkpoint pause (criu.TestMeasureCheckpointPause): $1 records, $2 checkpoints"
	(cd "$REPO" && RRC_MEASURE_KEYS=$1 RRC_MEASURE_N=$2 RRC_MEASURE_NICE=-10 \
		go test -tags measure ./runtime/criu -run '^TestMeasureCheckpointPause$' -v -count=1 -timeout 30m 2>&1) |
		grep -E 'redis loaded|checkpoints:|^ +bench_test.go:[0-9]+:   |restore|FAIL|panic' | sed -E 's/^ +bench_test.go:[0-9]+: //' || true
}
PAUSE_100K="(not run: BENCH_PARTS)"
part pause && PAUSE_100K=$(pause_run 100000 20)
PAUSE_1M="(run with BENCH_FULL=1)"
PAUSE_10M="(run with BENCH_FULL=1)"
if [[ $FULL == 1 ]] && part pause; then
	PAUSE_1M=$(pause_run 1000000 20)
	PAUSE_10M=$(pause_run 10000000 "$N10M")
fi

# --- the document ------------------------------------------------------------------

# mean CONFIG METRIC: mean over the rounds (empty if none).
mean() {
	awk -F'\t' -v c="$1" -v m="$2" '$1 == c && $3 == m && $4 ~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/ { s += $4; n++ }
		END { if (n) printf "%.6f", s / n }' "$REC"
}
count() { awk -F'\t' -v c="$1" -v m="$2" '$1 == c && $3 == m { n++ } END { print n + 0 }' "$REC"; }
sum() { awk -F'\t' -v c="$1" -v m="$2" '$1 == c && $3 == m { s += $4 } END { print s + 0 }' "$REC"; }
fmt() {
	[[ -z $1 ]] && { echo "-"; return; }
	awk -v v="$1" 'BEGIN { a = (v < 0) ? -v : v
		if (a >= 1000) printf "%.0f", v; else if (a >= 10) printf "%.1f", v; else if (a >= 1) printf "%.2f", v; else printf "%.3f", v }'
}
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (a > 0) printf f, b / a; else print "-" }' || echo "-"; }
row2() { # WHAT METRIC: runc.v2 vs io.rrc.v1 unannotated
	local r x
	r=$(mean runc "$2") x=$(mean rrcplain "$2")
	echo "| $1 | $(fmt "$r") | $(fmt "$x") | $(ratio "$r" "$x") |"
}
# rowe WHAT METRIC [SCALE] [with-ratio]: baseline column then one per epoch.
rowe() {
	local what=$1 m=$2 scale=${3:-1} withratio=${4:-} r line v e
	r=$(mean runc "$m")
	if [[ -n $NOBASE ]]; then line="| $what |" r=
	elif [[ -n $r && $m == [GS]ET.* ]]; then line="| $what | $(fmt "$r") |"
	else line="| $what | |" r=; fi
	for e in $EPOCHS; do
		v=$(mean "$e" "$m")
		[[ -n $v ]] && v=$(awk -v v="$v" -v s="$scale" 'BEGIN { printf "%.6f", v * s }')
		if [[ -n $withratio && -n $v && -n $r ]]; then line+=" $(fmt "$v") ($(ratio "$r" "$v" %.2g)) |"; else line+=" $(fmt "$v") |"; fi
	done
	echo "$line"
}
# target_row WHAT METRIC EPOCHS-FACTOR: added latency (replicated - runc)
# against FACTOR x epoch + 2 x pause (pause: the primary's mean during the
# single-client run of that epoch length).
target_row() {
	local what=$1 m=$2 k=$3 line="| $1 |" e em r v p t
	r=$(mean runc "$m")
	for e in $EPOCHS; do
		em=$(ms "$e") v=$(mean "$e" "$m") p=$(mean "$e" pause1.mean)
		[[ -n ${CYCLE:-} ]] && em=$(mean "$e" cycle)
		if [[ -z $v || -z $r || -z $p ]]; then line+=" - |"; continue; fi
		line+=$(awk -v v="$v" -v r="$r" -v e="$em" -v p="$p" -v k="$k" 'BEGIN {
			a = v - r; t = k * e + 2 * p
			printf " %.1f <= %.1f: %s |", a, t, (a <= t) ? "met" : "**not met**" }')
	done
	echo "$line"
}
limit_row() { # WHAT METRIC LIMIT
	local line="| $1 |" e v
	for e in $EPOCHS; do
		v=$(mean "$e" "$2")
		if [[ -z $v ]]; then line+=" - |"; continue; fi
		line+=$(awk -v v="$v" -v l="$3" 'BEGIN { printf " %.1f <= %s: %s |", v, l, (v <= l) ? "met" : "**not met**" }')
	done
	echo "$line"
}
NOBASE=
header() {
	local line="| $1 | runc.v2 (unreplicated) |" sep="| --- | --- |" e
	NOBASE=
	[[ ${2:-} == nobase ]] && line="| $1 |" sep="| --- |" NOBASE=1
	for e in $EPOCHS; do line+=" epoch $e |"; sep+=" --- |"; done
	printf '%s\n%s\n' "$line" "$sep"
}
# pause_summary KEYS TEXT: a table row from the TestMeasureCheckpointPause lines: RSS,
# checkpoints, incremental pause mean / p90, FastDumpOptions (full) pause mean / p90,
# the same on 4 KiB pages, bytes, runc.
pause_summary() {
	local keys=$1 text=$2
	[[ $text == "("* ]] && { echo "| $keys | (BENCH_FULL=1) | | | | | | | |"; return; }
	awk -v k="$keys" '
		# field(key): the value after the first "key " on the line, up to the comma.
		function field(key,   v) { v = $0; sub(".*" key " ", "", v); sub(/,.*/, "", v); return v }
		/redis loaded/ { rss = $0; sub(/.*VmRSS: */, "", rss) }
		/^Checkpointer FastDumpOptions, [0-9]+ checkpoints/ { fast = 1; match($0, /[0-9]+ checkpoints/); cnt = substr($0, RSTART, RLENGTH - 12)
			mean = field("pause mean"); p90 = field("p90"); next }
		/^Checkpointer FastDumpOptions, images on 4 KiB-page tmpfs/ { fast = 0
			m4 = field("pause mean"); p4 = field("p90"); next }
		fast && /checkpoint bytes/ { b = $NF; fast = 0 }
		/^Checkpointer runc/ { fast = 0 }
		/^Checkpointer FastDumpOptions, incremental memory/ { fast = 0; mi = field("pause mean"); pi = field("p90"); next }
		/^runc checkpoint/ { rw = $0; sub(/.*wall mean /, "", rw); sub(/,.*/, "", rw) }
		/^restore:/ { rs = $0; sub(/.*runc restore /, "", rs); sub(/;.*/, "", rs) }
		END { printf "| %s | %s | %s | %s | %s | %s | %.0f MB | %s | %s |\n", k, rss, cnt, mi " / " pi, mean " / " p90, m4 " / " p4, b / 1e6, rw, rs }' <<<"$text"
}


# web_section: the web server's part of the document, between markers so
# that a web-only run (BENCH_PARTS=web) can replace it in place.
maxv() { awk -F'\t' -v c="$1" -v m="$2" '$1 == c && $3 == m && $4 ~ /^-?[0-9.]+$/ { if (n++ == 0 || $4 > x) x = $4 } END { if (n) printf "%.6f", x }' "$REC"; }
web_section() {
	local r e rps dl wait bound
	echo "<!-- web: begin (written by make bench, part 3) -->"
	cat <<WEB
## Web server (issue 17): lighttpd, unreplicated vs epoch mode at 100 ms

Written by \`$CMD\` on $(date -u +%Y-%m-%d) ($(nproc) cores, kernel $(uname -r); load average
$LOAD_BEFORE before the run). Debian's lighttpd 1.4.69 (\`$WEBIMAGE\`, built by
contrib/imagebuild/images.sh) serving twenty files of 1-27 KB and a 10 MB file, in the lab
(\`$LAB\`): unreplicated in a namespace of its own with a macvlan of a's eth0 ($BASE,
io.containerd.runc.v2), or replicated a → b by the shim at 100 ms epochs ($SVC, the gate
in the service network's gate namespace, docs/NETFILTER.md). Clients: test/bench/webclient
on the lab client, every byte checked: 8 keep-alive connections fetching the small files
in turn, one request at a time each, for $WEB_SECS s; then one 10 MB download on a fresh
connection; then (replicated) the 8 clients again for 8 s with \`lab.sh crash a\` 3 s in:
the longest time any connection went without a response, against detection + restore +
0.5 s from b's status. $WEB_ROUNDS alternating rounds; means over the rounds (the wait:
mean and worst).

| figure | runc.v2 (unreplicated) | epoch 100 ms | target (epoch mode) |
| --- | --- | --- | --- |
WEB
	rps=$(mean web-100ms web.rps)
	echo "| responses/s, 8 keep-alive clients | $(fmt "$(mean web-runc web.rps)") | $(fmt "$rps") | $(awk -v v="$rps" 'BEGIN { if (v == "") print "-"; else printf ">= 70: %s", (v >= 70) ? "met" : "**not met**" }') |"
	echo "| per-response latency, mean (ms) | $(fmt "$(mean web-runc web.mean)") | $(fmt "$(mean web-100ms web.mean)") | |"
	echo "| per-response latency, p99 (ms) | $(fmt "$(mean web-runc web.p99)") | $(fmt "$(mean web-100ms web.p99)") | |"
	dl=$(mean web-100ms web.dl)
	echo "| 10 MB download (s) | $(fmt "$(mean web-runc web.dl)") | $(fmt "$dl") | $(awk -v v="$dl" 'BEGIN { if (v == "") print "-"; else printf "<= 2 s: %s", (v <= 2) ? "met" : "**not met**" }') |"
	echo "| pause per epoch during the clients, mean (ms) | | $(fmt "$(mean web-100ms web.pause)") | |"
	wait=$(mean web-100ms fo.wait) bound=$(mean web-100ms fo.bound)
	echo "| longest client wait across the failover, mean of the rounds (ms) | | $(fmt "$wait") | <= detection + restore + 500 = $(fmt "$bound"): $(awk -v v="$wait" -v b="$bound" 'BEGIN { if (v == "" || b == "") print "-"; else print (v <= b) ? "met" : "**not met**" }') |"
	echo "| longest client wait across the failover, worst round (ms) | | $(fmt "$(maxv web-100ms fo.wait)") | |"
	echo "| that client served after the address came up on b (ms) | | $(fmt "$(mean web-100ms fo.afterup)") | <= 500 |"
	echo "| failover: detection / restore / total, last heard → reachable (ms) | | $(fmt "$(mean web-100ms fo.detection)") / $(fmt "$(mean web-100ms fo.restore)") / $(fmt "$(mean web-100ms fo.total)") | |"
	echo
	if grep -q '^round [0-9]*, web' "$NOTES" 2>/dev/null; then
		echo "Notes:"
		echo
		grep '^round [0-9]*, web' "$NOTES" | sed 's/^/* /'
		echo
	fi
	echo "<!-- web: end -->"
}

TOTAL_S=$((SECONDS - T0))
say "writing $OUT"
CMD="make bench"
[[ $FULL == 1 ]] && CMD="BENCH_FULL=1 make bench"
[[ -n ${BENCH_ROUNDS:-} ]] && CMD="BENCH_ROUNDS=$ROUNDS $CMD"
[[ -n ${BENCH_EPOCHS:-} ]] && CMD="BENCH_EPOCHS=\"$EPOCHS\" $CMD"
[[ -n ${BENCH_SECONDS:-} ]] && CMD="BENCH_SECONDS=$SECS $CMD"
[[ $FULL == 1 && -n ${BENCH_N10M:-} ]] && CMD="BENCH_N10M=$N10M $CMD"
[[ -n ${BENCH_PARTS:-} ]] && CMD="BENCH_PARTS=\"$PARTS\" $CMD"
[[ -n ${BENCH_WEB_ROUNDS:-} ]] && CMD="BENCH_WEB_ROUNDS=$WEB_ROUNDS $CMD"
[[ -n ${BENCH_HYBRID:-} ]] && CMD="BENCH_HYBRID=\"$HYB_CONFIGS\" $CMD"
[[ -n ${BENCH_HYBRID_ROUNDS:-} ]] && CMD="BENCH_HYBRID_ROUNDS=$HYB_ROUNDS $CMD"
[[ -n ${BENCH_HYBRID_WORKLOADS:-} ]] && CMD="BENCH_HYBRID_WORKLOADS=\"$HYB_WORKLOADS\" $CMD"
[[ -n ${BENCH_SOAK_MINUTES:-} ]] && part soak && CMD="BENCH_SOAK_MINUTES=$SOAK_MINUTES $CMD"
[[ $LAB != rrcbench || $LAB_SUBNET != 10.87.0 ]] && CMD="LAB=$LAB LAB_SUBNET=$LAB_SUBNET $CMD"
# replace_section NAME FUNCTION: the document's section NAME (between its
# markers) replaced by FUNCTION's output, or appended if it has none.
replace_section() {
	"$2" >"$WORK/$1.md"
	if grep -q "^<!-- $1: begin" "$OUT" 2>/dev/null; then
		awk -v f="$WORK/$1.md" -v b="^<!-- $1: begin" -v e="^<!-- $1: end" '$0 ~ b { while ((getline l < f) > 0) print l; skip = 1; next }
			$0 ~ e { skip = 0; next } !skip' "$OUT" >"$WORK/doc.md"
	else
		{ cat "$OUT"; echo; cat "$WORK/$1.md"; } >"$WORK/doc.md"
	fi
	cp "$WORK/doc.md" "$OUT"
}
if ! part redis; then
	# Only the sections of the parts that ran are replaced.
	part web && replace_section web web_section
	part hybrid && replace_section hybrid hybrid_section
	part idle && replace_section idle idle_section
	part soak && replace_section soak soak_section
	say "wrote the $(part web && echo "web ")$(part hybrid && echo "hybrid ")$(part idle && echo "idle ")$(part soak && echo "soak ")section(s) of $OUT ($((TOTAL_S / 60)) min $((TOTAL_S % 60)) s)"
	exit 0
fi
NRR=0
for e in $EPOCHS; do NRR=$((NRR + $(count "$e" epochs))); done
{
	cat <<HDR
# Benchmarks

Written by \`$CMD\` (test/bench/bench.sh) on $(date -u +%Y-%m-%d) — $(nproc) cores,
$(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r); load average before the run
$LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg); the run took $((TOTAL_S / 60)) min $((TOTAL_S % 60)) s
(part 1, Redis through containerd: $((PART1_S / 60)) min $((PART1_S % 60)) s). The machine is shared and
noisy: the configurations are measured in alternating rounds in one run ($ROUNDS rounds) and
compared as ratios and differences; figures are means over the rounds (p99 and p90: the
mean of each round's percentile). The project's targets are reported, not asserted.

Everything runs in the lab (docs/LAB.md, lab \`$LAB\`, $LAB_SUBNET.0/24): Redis 7
(\`$IMAGE\`, no persistence) in a container on lab host a, loaded with
100,000 records of 100 bytes (\`DEBUG POPULATE 100000 key 100\`), redis-benchmark 7 (\`--csv\`, GET and
SET) on the lab client. Each Redis has a network namespace of its own with a macvlan of
a's eth0: the unreplicated one made by this script (\`ctr run --with-ns network:…\`,
address $BASE), the replicated one by the shim (\`io.rrc.service-ip=$SVC/24\`,
\`io.rrc.service-link=eth0\`), so client packets take the same path. The shim and rrcctl
are built from this tree and given to the lab's containerd with \`LAB_SHIM_PATH\`;
the shim configuration is the default but for the lab's paths and peer TLS
(\`rrcctl pki\`), so CRIU dumps at nice -10.

## Redis through the runtime, unreplicated

io.rrc.v1 without annotations wraps the runc task service, so the ratio should be 1
within noise. 1 client: 50,000 requests per test; 50 clients: 200,000. The 1-client
latency here is tens of microseconds and on this 2-core machine it changes several-fold
from one run to the next (whether client and Redis share a core, the other users' load):
its ratio is mostly noise; the 50-client throughput is the steadier figure.

| figure | io.containerd.runc.v2 | io.rrc.v1 | ratio |
| --- | --- | --- | --- |
HDR
	row2 "GET, 1 client: mean latency (ms)" GET.c1.avg_latency_ms
	row2 "GET, 1 client: p99 latency (ms)" GET.c1.p99_latency_ms
	row2 "SET, 1 client: mean latency (ms)" SET.c1.avg_latency_ms
	row2 "SET, 1 client: p99 latency (ms)" SET.c1.p99_latency_ms
	row2 "GET, 50 clients: requests/s" GET.c50.rps
	row2 "SET, 50 clients: requests/s" SET.c50.rps
	cat <<MID

## Redis replicated, epoch mode, through the shim

Per round and epoch length: the backup on b (\`ctr run --runtime io.rrc.v1
--annotation io.rrc.role=backup --annotation io.rrc.listen=$B:7100 --annotation
io.rrc.peer-name=$A …\`), then the primary on a (\`io.rrc.role=primary\`,
\`io.rrc.peer=$B:7100\`), both with \`io.rrc.epoch=E\` (heartbeats at their defaults, 30 ms × 3) and the
service address; in sync (status file), the records loaded, redis-benchmark against
$SVC, the primary's status file read after the 1-client run and after the 50-client
run; then \`lab.sh crash a\`, the backup's status file read once it says
\`primary-after-failover\`, DBSIZE checked on $SVC; then the lab is brought down and up for
the next round. Each epoch round is preceded by a runc.v2 round (the baseline column is
their mean). Under output commit a reply waits for the end of its epoch and the backup's
ack, so a single client gets about one reply per committed epoch, and an epoch tick is
skipped while the previous checkpoint is still being sent: the request counts are
$SECS s worth of the commit cycle measured just before (over 3 s, loaded, idle): 1 client
$SECS s / cycle requests per test (at least 30), 50 clients 25 times that. Pause, bytes
and ack are the status file's summaries of the last 64 epochs; epochs taken and skipped
are counted from just before the benchmark to its end. With the shim's default
(incremental_memory) CRIU copies inside the pause only the memory Redis wrote since the
previous checkpoint (userfaultfd write tracking, docs/CHECKPOINT.md) and the rest of the
image comes from the previous one after the thaw; a column marked "-full" is the same epoch
length with incremental_memory = false, every dump a full copy of Redis's memory. Only the
blocks that changed since the previous checkpoint are sent to the backup (delta checkpoints,
docs/PEER-PROTOCOL.md): "checkpoint per epoch" is the image, "sent" what crossed the wire,
"copied inside the pause" what CRIU copied while Redis was frozen.
When taking and sending one checkpoint takes longer than an epoch, ticks are skipped and
the real cycle, hence the latency, is longer than the epoch configured.
$NRR replicated rounds got as far as the benchmark.

MID
	header figure
	rowe "GET, 1 client: mean latency (ms)" GET.c1.avg_latency_ms
	rowe "GET, 1 client: p99 latency (ms)" GET.c1.p99_latency_ms
	rowe "SET, 1 client: mean latency (ms)" SET.c1.avg_latency_ms
	rowe "SET, 1 client: p99 latency (ms)" SET.c1.p99_latency_ms
	rowe "GET, 50 clients: requests/s (ratio)" GET.c50.rps 1 r
	rowe "SET, 50 clients: requests/s (ratio)" SET.c50.rps 1 r
	rowe "pause per epoch, mean (ms), 1-client run" pause1.mean
	rowe "pause per epoch, p90 (ms), 1-client run" pause1.p90
	rowe "pause per epoch, mean (ms), 50-client run" pause50.mean
	rowe "pause per epoch, p90 (ms), 50-client run" pause50.p90
	rowe "checkpoint per epoch (MB), 1-client run" bytes1.mean 0.000001
	rowe "of which sent to the backup (MB), 1-client run" sent1.mean 0.000001
	rowe "of which sent to the backup (MB), 50-client run" sent50.mean 0.000001
	rowe "memory CRIU copied inside the pause (MB), 1-client run" copied1.mean 0.000001
	rowe "memory CRIU copied inside the pause (MB), 50-client run" copied50.mean 0.000001
	rowe "checkpoint taken → backup's ack, mean (ms), 1-client run" ack1.mean
	rowe "checkpoint taken → backup's ack, p90 (ms), 1-client run" ack1.p90
	rowe "checkpoint taken → backup's ack, mean (ms), 50-client run" ack50.mean
	rowe "commit cycle before the benchmark (ms per committed epoch)" cycle
	rowe "epochs taken during the benchmark" epochs
	rowe "epoch ticks skipped during the benchmark (previous still being sent), %" skipped.pct
	line="| rounds with a problem, of $ROUNDS (see the notes) | |"
	for e in $EPOCHS; do line+=" $(sum "$e" problem) |"; done
	echo "$line"
	cat <<MID2

A problem round: the pair did not get in sync, the primary's status after the benchmark
was not in-sync or counted re-pairings (a degraded period: output flowed unreplicated for
a while, so that round's latencies are too good), failed epochs or nacks, or b did not
take over, or the data was not all there after the failover. Such rounds are reported,
and their figures are in the means.

### Targets

Added latency is the replicated mean (or p99) minus the runc.v2 baseline's; pause is the
primary's mean pause during the 1-client run of the same epoch length. The two rows in
parentheses are not targets: they put the commit cycle actually achieved (measured before
the benchmark, see above) in place of the configured epoch, i.e. they show whether the
latency is explained by the epochs that were really taken.

MID2
	header target nobase
	target_row "GET: added mean latency <= epoch + 2 x pause (ms)" GET.c1.avg_latency_ms 1
	target_row "SET: added mean latency <= epoch + 2 x pause (ms)" SET.c1.avg_latency_ms 1
	target_row "GET: added p99 latency <= 2 x epoch + 2 x pause (ms)" GET.c1.p99_latency_ms 2
	target_row "SET: added p99 latency <= 2 x epoch + 2 x pause (ms)" SET.c1.p99_latency_ms 2
	CYCLE=1 target_row "(GET: added mean latency <= commit cycle + 2 x pause (ms))" GET.c1.avg_latency_ms 1
	CYCLE=1 target_row "(GET: added p99 latency <= 2 x commit cycle + 2 x pause (ms))" GET.c1.p99_latency_ms 2
	limit_row "pause per epoch, mean, 100,000 records <= 15 ms" pause1.mean 15
	limit_row "recovery after detection (total − detection) <= 300 ms" fo.recovery 300
	cat <<MID3

### Failover (\`lab.sh crash a\`), from the backup's status

Detection: last heartbeat heard from a → a declared failed (3 missed 30 ms heartbeats, the defaults);
stop + prepare: peer channel closed, restore route; restore: bundle + \`runc restore\`
(CRIU, TCP repair) of the last committed checkpoint; network: service link up + first
gratuitous ARP; total: last heard → restored and reachable.

MID3
	header "ms" nobase
	rowe "detection" fo.detection
	rowe "stop + prepare" fo.stopprep
	rowe "restore" fo.restore
	rowe "network" fo.network
	rowe "total" fo.total
	rowe "recovery after detection (total − detection)" fo.recovery
	rowe "DBSIZE on $SVC after the failover" fo.dbsize
	echo
	echo "### Notes"
	echo
	if [[ -s $NOTES ]]; then
		sed 's/^/* /' "$NOTES"
	else
		echo "None: every replicated round stayed in sync (no degraded period, no re-pairing, no failed"
		echo "epoch) and failed over."
	fi
	cat <<MID4

### Per round: rrcctl status

\`\`\`
$(cat "$DETAILS")
\`\`\`

## Checkpoint pause per epoch vs records

\`RRC_MEASURE_KEYS=N RRC_MEASURE_N=C RRC_MEASURE_NICE=-10 go test -tags measure ./runtime/criu
-run TestMeasureCheckpointPause -v\`: Redis on lab host a (\`--net-host\`, no replication)
loaded with N records of 100 bytes, C checkpoints 100 ms apart (20; $N10M at 10,000,000 records,
BENCH_N10M), each round interleaving io.rrc.v1's checkpointer with incremental memory dumps
(the shim's default: CRIU copies what Redis wrote since that checkpointer's previous dump,
one round earlier), the same with full dumps (our freeze, persistent CRIU,
FastDumpOptions; images on the image tmpfs, huge=within_size), the same writing its
images into a tmpfs of 4 KiB pages only (the ratio the large folios buy), the same with
runc's CRIU options, and \`runc checkpoint
--leave-running\`; then the last checkpoint restored with \`runc restore\` after
\`lab.sh crash a\`. 1,000,000 and 10,000,000 records only with BENCH_FULL=1.
Target: mean <= 15 ms at 100,000 records; at 1 M and 10 M: how it grows.

| records | Redis RSS | checkpoints | io.rrc.v1 checkpointer pause mean / p90, incremental | the same, full dumps | full, images on 4 KiB-page tmpfs | checkpoint | runc checkpoint --leave-running, wall mean | runc restore |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
$(pause_summary 100,000 "$PAUSE_100K")
$(pause_summary 1,000,000 "$PAUSE_1M")
$(pause_summary 10,000,000 "$PAUSE_10M")

Target at 100,000 records, io.rrc.v1's checkpointer alone (no replication, no client),
incremental (the shim's default): mean pause $(awk '/^Checkpointer FastDumpOptions, incremental memory/ { m = $0; sub(/.*pause mean /, "", m); sub(/ms,.*/, "", m)
	printf "%.1f ms <= 15 ms: %s", m, (m <= 15) ? "met" : "**not met**" }' <<<"$PAUSE_100K"); with full dumps $(awk '/^Checkpointer FastDumpOptions, [0-9]+ checkpoints/ { m = $0; sub(/.*pause mean /, "", m); sub(/ms,.*/, "", m)
	printf "%.1f ms", m }' <<<"$PAUSE_100K").

Figures in ms as mean / min / p50 / p90 / max:

### 100,000 records

\`\`\`
$PAUSE_100K
\`\`\`

### 1,000,000 records

\`\`\`
$PAUSE_1M
\`\`\`

### 10,000,000 records

\`\`\`
$PAUSE_10M
\`\`\`
MID4
	if part web; then echo; web_section; fi
	if part hybrid; then echo; hybrid_section; fi
	if part idle; then echo; idle_section; fi
	if part soak; then echo; soak_section; fi
} >"$OUT"
say "wrote $OUT ($((TOTAL_S / 60)) min $((TOTAL_S % 60)) s)"
