# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Part 4 of make bench (sourced by bench.sh, whose helpers it uses): Redis
# with 100,000 records unreplicated (io.containerd.runc.v2), in epoch mode
# and in hybrid mode at the checkpoint intervals of BENCH_HYBRID, in
# alternating rounds, each measured the same way:
#   * one client, one request at a time, GET and SET alternating, for
#     HYB_SECS s (test/bench/redislat: mean, p50, p99, p99.9);
#   * 50 clients (redis-benchmark -c 50, GET and SET): requests per second,
#     and the primary shim's CPU time (user + system) per request;
#   * from the primary's status file: log bytes per second and pause per
#     checkpoint during the 50 clients;
#   * replicated only: one client busy (redislat) while `lab.sh crash a`
#     cuts host a 2 s in; from the backup's status file the failover split
#     (detection, restore, replay, network) and the records replayed, and
#     the client's longest wait.

HYB_SECS=${BENCH_HYBRID_SECONDS:-10}
CLK_TCK=$(getconf CLK_TCK)

redislat() { lab exec client "$WORK/bin/redislat" "$@"; }

# hyb_latency CONFIG ROUND IP: the single client.
hyb_latency() {
	local j=$WORK/$1.$2.lat.json m
	redislat -addr "$3:6379" -seconds "$HYB_SECS" >"$j" 2>/dev/null || round_note "$1" "$2" "single client: $(jq -r .error "$j" 2>/dev/null)"
	for m in mean_ms p50_ms p99_ms p999_ms requests; do rec "$1" "$2" "lat.$m" "$(jq ".$m" "$j")"; done
}

# shim_ticks ID: user + system clock ticks of host a's io.rrc.v1 shim of ID.
shim_ticks() {
	local pid
	pid=$(pgrep -f -- "containerd-shim-rrc-v1 .*-id $1( |$)" | head -1)
	[[ -n $pid ]] && awk '{ print $14 + $15 }' "/proc/$pid/stat" || echo ""
}

# hyb_throughput CONFIG ROUND IP N [ID]: 50 clients, N requests per test.
hyb_throughput() {
	local cfg=$1 round=$2 ip=$3 n=$4 id=${5:-} t0 t1 b0 b1 s0 s1 f
	[[ -n $id ]] && { t0=$(shim_ticks "$id"); f=$(status_file a "$id"); b0=$(jq '.engine.log.bytes // 0' "$f"); s0=$(date +%s.%N); }
	lab exec client redis-benchmark -h "$ip" --csv -n "$n" -c 50 -t get,set >"$WORK/$cfg.$round.c50.csv"
	rec "$cfg" "$round" rps.get "$(csv_field "$WORK/$cfg.$round.c50.csv" GET rps)"
	rec "$cfg" "$round" rps.set "$(csv_field "$WORK/$cfg.$round.c50.csv" SET rps)"
	[[ -z $id ]] && return 0
	t1=$(shim_ticks "$id") b1=$(jq '.engine.log.bytes // 0' "$f") s1=$(date +%s.%N)
	[[ -n $t0 && -n $t1 ]] && rec "$cfg" "$round" cpu.us "$(awk -v a="$t0" -v b="$t1" -v n="$n" -v h="$CLK_TCK" 'BEGIN { print (b - a) / h * 1e6 / (2 * n) }')"
	rec "$cfg" "$round" log.bps "$(awk -v a="$b0" -v b="$b1" -v s="$s0" -v e="$s1" 'BEGIN { print (b - a) / (e - s) }')"
	rec "$cfg" "$round" pause "$(jq .engine.pause_ms.mean "$f")"
}

hyb_unrep_round() {
	local round=$1 id=plain-$RANDOM cfg=runc
	say "hybrid round $round/$HYB_ROUNDS: Redis unreplicated (io.containerd.runc.v2, $BASE)"
	base_netns || { round_note "$cfg" "$round" "could not make its network namespace"; return 1; }
	lab ctr a run -d --runtime io.containerd.runc.v2 --with-ns "network:$BASE_NS" "$IMAGE" "$id" "${REDIS[@]}" >/dev/null ||
		{ round_note "$cfg" "$round" "ctr run failed"; return 1; }
	wait_ping "$BASE" 10 && load "$BASE" || { round_note "$cfg" "$round" "Redis did not answer or load"; return 1; }
	hyb_latency "$cfg" "$round" "$BASE"
	hyb_throughput "$cfg" "$round" "$BASE" 200000
	plain_stop "$id"
}

# hyb_round CONFIG ROUND: CONFIG is MODE-INTERVAL (epoch-100ms, hybrid-300ms).
hyb_round() {
	local cfg=$1 round=$2 mode=${1%%-*} e=${1#*-} id=hyb$RANDOM n50 f j det rest rep net tot
	say "hybrid round $round/$HYB_ROUNDS: io.rrc.v1 $mode mode, checkpoint interval $e (backup on b, primary on a, $SVC)"
	start_pair "$cfg" "$round" "$id" "$IMAGE" --annotation "io.rrc.epoch=$e" --annotation "io.rrc.mode=$mode" -- "${REDIS[@]}" || return 1
	wait_ping "$SVC" 20 && load "$SVC" || { round_note "$cfg" "$round" "Redis did not answer or load on $SVC"; return 1; }
	sleep 1
	hyb_latency "$cfg" "$round" "$SVC"
	# Epoch mode answers 50 clients about once per commit cycle.
	n50=50000
	[[ $mode == epoch ]] && n50=5000
	hyb_throughput "$cfg" "$round" "$SVC" "$n50" "$id"
	say "  $(jq -r '"1 client: mean \(.mean_ms) ms, p99 \(.p99_ms) ms, p99.9 \(.p999_ms) ms"' "$WORK/$cfg.$round.lat.json"); 50 clients: $(csv_field "$WORK/$cfg.$round.c50.csv" GET rps) GET/s"
	rrcctl_status a >"$WORK/$cfg.$round.rrcctl-a" 2>&1 || true

	j=$WORK/$cfg.$round.fo.json
	redislat -addr "$SVC:6379" -seconds 6 >"$j" 2>/dev/null &
	local rl=$!
	sleep 2
	lab crash a >/dev/null 2>&1
	wait "$rl" || round_note "$cfg" "$round" "client across the failover: $(jq -r .error "$j" 2>/dev/null)"
	if ! wait_status b "$id" '.engine.state == "primary-after-failover"' 30; then
		round_note "$cfg" "$round" "no failover: b's state $(state_of b "$id")"
		return 1
	fi
	f=$(status_file b "$id")
	rrcctl_status b >"$WORK/$cfg.$round.rrcctl-b" 2>&1 || true
	read -r det rest rep net tot < <(jq -r '.engine.failover | "\(.detection_ms) \(.restore_ms) \(.replay_ms // 0) \(.network_ms) \(.total_ms)"' "$f")
	rec "$cfg" "$round" fo.detection "$det"
	rec "$cfg" "$round" fo.restore "$rest"
	rec "$cfg" "$round" fo.replay "$rep"
	rec "$cfg" "$round" fo.network "$net"
	rec "$cfg" "$round" fo.recovery "$(awk -v t="$tot" -v d="$det" 'BEGIN { print t - d }')"
	rec "$cfg" "$round" fo.records "$(jq '.engine.failover.replay.records // 0' "$f")"
	rec "$cfg" "$round" fo.reset "$(jq '.engine.failover.replay.reset // 0' "$f")"
	rec "$cfg" "$round" fo.wait "$(jq .longest_gap_ms "$j")"
	say "  failover: detection $det ms, restore $rest ms, replay $rep ms ($(jq '.engine.failover.replay.records // 0' "$f") records), network $net ms; longest client wait $(jq .longest_gap_ms "$j") ms"
	{
		echo "round $round, $cfg: primary (rrcctl status on a, after the clients):"
		grep -v '^CONTAINER' "$WORK/$cfg.$round.rrcctl-a" | sed 's/^/  /'
		echo "  backup after lab.sh crash a (rrcctl status on b):"
		grep -v '^CONTAINER' "$WORK/$cfg.$round.rrcctl-b" | sed 's/^/  /'
	} >>"$WORK/hybrid-details"
}

# hyb_row WHAT METRIC [SCALE]: one column per configuration, runc first.
hyb_row() {
	local line="| $1 |" c v
	for c in runc $HYB_CONFIGS; do
		v=$(mean "$c" "$2")
		[[ -n $v && -n ${3:-} ]] && v=$(awk -v v="$v" -v s="$3" 'BEGIN { printf "%.6f", v * s }')
		line+=" $(fmt "$v") |"
	done
	echo "$line"
}

# hyb_target WHAT CONFIG VALUE TARGET-TEXT OK: a target row.
hyb_target() { echo "| $1 | $2 | $(fmt "$3") | $4 | $([[ $5 == 1 ]] && echo met || echo "**not met**") |"; }

hybrid_section() {
	local c line sep def=${HYB_CONFIGS##* } lat p99 r0 r1 rec
	for c in $HYB_CONFIGS; do [[ $c == hybrid-* ]] && { def=$c; break; }; done
	echo "<!-- hybrid: begin (written by make bench, part 4) -->"
	cat <<HYB
## Hybrid mode (issue 14): Redis, runc.v2 vs epoch mode vs hybrid mode

Written by \`$CMD\` on $(date -u +%Y-%m-%d) ($(nproc) cores, kernel $(uname -r); load average
$LOAD_BEFORE before the run). Redis ($IMAGE) with 100,000 records of 100 bytes (DEBUG
POPULATE) in the lab (\`$LAB\`): unreplicated (io.containerd.runc.v2, $BASE, a macvlan of
a's eth0) or replicated a → b by the shim ($SVC), in epoch mode or in hybrid mode at the
checkpoint interval the column names (\`io.rrc.epoch\`). Single client: test/bench/redislat,
one request at a time, GET of a random record and SET of 100 bytes alternating, $HYB_SECS s. 50
clients: redis-benchmark -c 50 -t get,set. The shim's CPU time: user + system of the
primary's shim process over the 50-client run, per request. Failover: redislat busy while
\`lab.sh crash a\` cuts a 2 s in; the split from b's status file. $HYB_ROUNDS alternating
rounds; means over the rounds.

HYB
	line="| figure | runc.v2 (unreplicated) |" sep="| --- | --- |"
	for c in $HYB_CONFIGS; do line+=" $c |"; sep+=" --- |"; done
	printf '%s\n%s\n' "$line" "$sep"
	hyb_row "1 client: mean (ms)" lat.mean_ms
	hyb_row "1 client: p50 (ms)" lat.p50_ms
	hyb_row "1 client: p99 (ms)" lat.p99_ms
	hyb_row "1 client: p99.9 (ms)" lat.p999_ms
	hyb_row "1 client: requests in $HYB_SECS s" lat.requests
	hyb_row "50 clients: GET/s" rps.get
	hyb_row "50 clients: SET/s" rps.set
	hyb_row "shim CPU per request, 50 clients (µs)" cpu.us
	hyb_row "log, 50 clients (bytes/s)" log.bps
	hyb_row "pause per checkpoint, 50 clients (ms)" pause
	hyb_row "failover: detection (ms)" fo.detection
	hyb_row "failover: restore (ms)" fo.restore
	hyb_row "failover: replay (ms)" fo.replay
	hyb_row "failover: records replayed" fo.records
	hyb_row "failover: network (ms)" fo.network
	hyb_row "failover: recovery after detection (ms)" fo.recovery
	hyb_row "failover: connections reset" fo.reset
	hyb_row "failover: the client's longest wait (ms)" fo.wait
	echo
	echo "Targets (hybrid mode at $def, the first hybrid configuration, against runc.v2, same run):"
	echo
	echo "| target | configuration | measured | target | |"
	echo "| --- | --- | --- | --- | --- |"
	r0=$(mean runc lat.mean_ms) lat=$(mean "$def" lat.mean_ms)
	if [[ -n $r0 && -n $lat ]]; then
		line=$(awk -v a="$lat" -v b="$r0" 'BEGIN { printf "%.6f", (a - b) * 1000 }')
		hyb_target "added single-client latency, mean (µs)" "$def" "$line" "<= 150" "$(awk -v v="$line" 'BEGIN { print (v <= 150) ? 1 : 0 }')"
	fi
	r0=$(mean runc lat.p99_ms) p99=$(mean "$def" lat.p99_ms)
	if [[ -n $r0 && -n $p99 ]]; then
		line=$(awk -v a="$p99" -v b="$r0" 'BEGIN { printf "%.6f", (a - b) * 1000 }')
		hyb_target "added single-client latency, p99 (µs)" "$def" "$line" "<= 1000" "$(awk -v v="$line" 'BEGIN { print (v <= 1000) ? 1 : 0 }')"
	fi
	r0=$(mean runc rps.get) r1=$(mean "$def" rps.get)
	if [[ -n $r0 && -n $r1 ]]; then
		line=$(awk -v a="$r1" -v b="$r0" 'BEGIN { printf "%.6f", 100 * (1 - a / b) }')
		hyb_target "50-client throughput overhead, GET (%)" "$def" "$line" "<= 30" "$(awk -v v="$line" 'BEGIN { print (v <= 30) ? 1 : 0 }')"
	fi
	rec=$(mean "$def" fo.recovery)
	[[ -n $rec ]] && hyb_target "recovery after detection, replay included (ms)" "$def" "$rec" "<= 300" "$(awk -v v="$rec" 'BEGIN { print (v <= 300) ? 1 : 0 }')"
	echo
	if grep -qE '^round [0-9]+, (runc|epoch-|hybrid-)' "$NOTES" 2>/dev/null; then
		echo "Notes:"
		echo
		grep -E '^round [0-9]+, (runc|epoch-|hybrid-)' "$NOTES" | sed 's/^/* /'
		echo
	fi
	if [[ -s $WORK/hybrid-details ]]; then
		echo "rrcctl status of each replicated round:"
		echo
		echo '```'
		cat "$WORK/hybrid-details"
		echo '```'
	fi
	echo "<!-- hybrid: end -->"
}
