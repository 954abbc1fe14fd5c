# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Part 4 of make bench (sourced by bench.sh, whose helpers it uses): Redis
# and memcached (BENCH_HYBRID_WORKLOADS), each with 100,000 records of 100
# bytes, unreplicated (io.containerd.runc.v2), in epoch mode and in hybrid
# mode at the checkpoint intervals of BENCH_HYBRID, in alternating rounds,
# each measured the same way with test/bench/kvclient (GET of a record and
# SET of 100 bytes, alternating, every reply checked):
#   * one client, one request at a time, for HYB_SECS s: mean, p50, p99,
#     p99.9;
#   * 50 clients, one request at a time each, for HYB_SECS s: requests per
#     second, and the primary shim's CPU time (user + system) per request;
#   * from the primary's status file: log bytes per second and pause per
#     checkpoint during the 50 clients;
#   * replicated only: one client busy while `lab.sh crash a` cuts host a
#     2 s in; from the backup's status file the failover split (detection,
#     restore, replay, network) and the records replayed, and the client's
#     longest wait.

HYB_SECS=${BENCH_HYBRID_SECONDS:-10}
HYB_WORKLOADS=${BENCH_HYBRID_WORKLOADS:-redis memcached}
CLK_TCK=$(getconf CLK_TCK)

kvclient() { lab exec client "$WORK/bin/kvclient" "$@"; }

# The workloads: image, port, kvclient protocol, command (none: the image's).
wl_image() { [[ $1 == redis ]] && echo "$IMAGE" || echo rrc.local/memcached:latest; }
wl_port() { [[ $1 == redis ]] && echo 6379 || echo 11211; }
wl_proto() { [[ $1 == redis ]] && echo redis || echo memcache; }
wl_cmd() { [[ $1 == redis ]] && printf '%s\n' "${REDIS[@]}" || true; }

# wl_load WORKLOAD IP: waits until it answers, then loads the records
# (Redis: DEBUG POPULATE; memcached: kvclient -load).
wl_load() {
	if [[ $1 == redis ]]; then
		wait_ping "$2" 20 && load "$2"
		return
	fi
	local i
	for ((i = 0; i < 40; i++)); do
		kvclient -proto memcache -addr "$2:11211" -keys 1 -load -n 2 >/dev/null 2>&1 && break
		sleep 0.5
	done
	kvclient -proto memcache -addr "$2:11211" -keys "$KEYS" -load -n 2 >/dev/null
}

# hyb_measure WORKLOAD CONFIG ROUND IP [ID]: the single client, then the 50.
hyb_measure() {
	local wl=$1 cfg=$1:$2 round=$3 ip=$4 id=${5:-} j m t0 t1 b0 b1 s0 s1 f
	local kv=(-proto "$(wl_proto "$wl")" -addr "$ip:$(wl_port "$wl")" -keys "$KEYS")
	j=$WORK/$wl.$2.$round.lat.json
	kvclient "${kv[@]}" -seconds "$HYB_SECS" -samples "$WORK/$wl.$2.$round.lat.csv" >"$j" 2>/dev/null || round_note "$cfg" "$round" "single client: $(jq -r .error "$j" 2>/dev/null)"
	for m in mean_ms p50_ms p99_ms p999_ms requests; do rec "$cfg" "$round" "lat.$m" "$(jq ".$m" "$j")"; done
	[[ -n $id ]] && { t0=$(shim_ticks "$id"); f=$(status_file a "$id"); b0=$(jq '.engine.log.bytes // 0' "$f"); s0=$(date +%s.%N); }
	j=$WORK/$wl.$2.$round.c50.json
	kvclient "${kv[@]}" -conns 50 -seconds "$HYB_SECS" >"$j" 2>/dev/null || round_note "$cfg" "$round" "50 clients: $(jq -r .error "$j" 2>/dev/null)"
	rec "$cfg" "$round" rps "$(jq .rps "$j")"
	say "  1 client: $(jq -r '"mean \(.mean_ms) ms, p99 \(.p99_ms) ms, p99.9 \(.p999_ms) ms"' "$WORK/$wl.$2.$round.lat.json"); 50 clients: $(jq .rps "$j") requests/s"
	[[ -z $id ]] && return 0
	t1=$(shim_ticks "$id") b1=$(jq '.engine.log.bytes // 0' "$f") s1=$(date +%s.%N)
	[[ -n $t0 && -n $t1 ]] && rec "$cfg" "$round" cpu.us "$(awk -v a="$t0" -v b="$t1" -v n="$(jq .requests "$j")" -v h="$CLK_TCK" 'BEGIN { if (n > 0) print (b - a) / h * 1e6 / n }')"
	rec "$cfg" "$round" log.bps "$(awk -v a="$b0" -v b="$b1" -v s="$s0" -v e="$s1" 'BEGIN { print (b - a) / (e - s) }')"
	rec "$cfg" "$round" pause "$(jq .engine.pause_ms.mean "$f")"
	# The newest checkpoints (at most 64), with the 50 clients: for the picture.
	jq -r '.engine.recent_epochs[]? | [.epoch, .pause_ms, .ack_ms] | @csv' "$f" >"$WORK/$wl.$2.$round.epochs.csv"
}

# shim_ticks ID: user + system clock ticks of host a's io.rrc.v1 shim of ID.
shim_ticks() {
	local pid
	pid=$(pgrep -f -- "containerd-shim-rrc-v1 .*-id $1( |$)" | head -1)
	[[ -n $pid ]] && awk '{ print $14 + $15 }' "/proc/$pid/stat" || echo ""
}

# hyb_unrep_round WORKLOAD ROUND: unreplicated, in its own namespace on a.
hyb_unrep_round() {
	local wl=$1 round=$2 id=plain-$RANDOM cmd
	mapfile -t cmd < <(wl_cmd "$wl")
	say "hybrid round $round/$HYB_ROUNDS: $wl unreplicated (io.containerd.runc.v2, $BASE)"
	base_netns || { round_note "$wl:runc" "$round" "could not make its network namespace"; return 1; }
	lab ctr a run -d --runtime io.containerd.runc.v2 --with-ns "network:$BASE_NS" "$(wl_image "$wl")" "$id" "${cmd[@]}" >/dev/null ||
		{ round_note "$wl:runc" "$round" "ctr run failed"; return 1; }
	wl_load "$wl" "$BASE" || { round_note "$wl:runc" "$round" "did not answer or load"; plain_stop "$id"; return 1; }
	hyb_measure "$wl" runc "$round" "$BASE"
	plain_stop "$id"
}

# hyb_round WORKLOAD CONFIG ROUND: CONFIG is MODE-INTERVAL (epoch-100ms,
# hybrid-1s).
hyb_round() {
	local wl=$1 c=$2 round=$3 mode=${2%%-*} e=${2#*-} id=hyb$RANDOM f j det rest rep net tot cmd
	local cfg=$wl:$c
	mapfile -t cmd < <(wl_cmd "$wl")
	say "hybrid round $round/$HYB_ROUNDS: $wl, io.rrc.v1 $mode mode, checkpoint interval $e (backup on b, primary on a, $SVC)"
	start_pair "$cfg" "$round" "$id" "$(wl_image "$wl")" --annotation "io.rrc.epoch=$e" --annotation "io.rrc.mode=$mode" -- "${cmd[@]}" || return 1
	wl_load "$wl" "$SVC" || { round_note "$cfg" "$round" "did not answer or load on $SVC"; return 1; }
	sleep 1
	hyb_measure "$wl" "$c" "$round" "$SVC" "$id"
	rrcctl_status a >"$WORK/$cfg.$round.rrcctl-a" 2>&1 || true

	j=$WORK/$wl.$c.$round.fo.json
	kvclient -proto "$(wl_proto "$wl")" -addr "$SVC:$(wl_port "$wl")" -keys "$KEYS" -seconds 6 -samples "$WORK/$wl.$c.$round.fo.csv" >"$j" 2>/dev/null &
	local kc=$!
	sleep 2
	date +%s%3N >"$WORK/$wl.$c.$round.crash"
	lab crash a >/dev/null 2>&1
	wait "$kc" || round_note "$cfg" "$round" "client across the failover: $(jq -r .error "$j" 2>/dev/null)"
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
	jq -r '.engine.failover | "\(.last_heard) \(.detection_ms) \(.total_ms)"' "$f" >"$WORK/$wl.$c.$round.fo.times"
	say "  failover: detection $det ms, restore $rest ms, replay $rep ms ($(jq '.engine.failover.replay.records // 0' "$f") records), network $net ms; longest client wait $(jq .longest_gap_ms "$j") ms"
	{
		echo "round $round, $cfg: primary (rrcctl status on a, after the clients):"
		grep -v '^CONTAINER' "$WORK/$cfg.$round.rrcctl-a" | sed 's/^/  /'
		echo "  backup after lab.sh crash a (rrcctl status on b):"
		grep -v '^CONTAINER' "$WORK/$cfg.$round.rrcctl-b" | sed 's/^/  /'
	} >>"$WORK/hybrid-details"
}

# hyb_rounds: every round of part 4.
hyb_rounds() {
	local round wl c
	for round in $(seq 1 "$HYB_ROUNDS"); do
		for wl in $HYB_WORKLOADS; do
			hyb_unrep_round "$wl" "$round" || lab_fresh
			for c in $HYB_CONFIGS; do
				hyb_round "$wl" "$c" "$round" || true
				lab_fresh
			done
		done
	done
}

# hyb_row WORKLOAD WHAT METRIC: one column per configuration, runc first.
hyb_row() {
	local line="| $2 |" c
	for c in runc $HYB_CONFIGS; do line+=" $(fmt "$(mean "$1:$c" "$3")") |"; done
	echo "$line"
}

# hyb_target WHAT CONFIG VALUE TARGET-TEXT OK: a target row.
hyb_target() { echo "| $1 | $2 | $(fmt "$3") | $4 | $([[ $5 == 1 ]] && echo met || echo "**not met**") |"; }

# hyb_table WORKLOAD: its figures and targets.
hyb_table() {
	local wl=$1 c line sep def r0 v
	for c in $HYB_CONFIGS; do [[ $c == hybrid-* ]] && { def=$c; break; }; done
	echo "### $wl"
	echo
	line="| figure | runc.v2 (unreplicated) |" sep="| --- | --- |"
	for c in $HYB_CONFIGS; do line+=" $c |"; sep+=" --- |"; done
	printf '%s\n%s\n' "$line" "$sep"
	hyb_row "$wl" "1 client: mean (ms)" lat.mean_ms
	hyb_row "$wl" "1 client: p50 (ms)" lat.p50_ms
	hyb_row "$wl" "1 client: p99 (ms)" lat.p99_ms
	hyb_row "$wl" "1 client: p99.9 (ms)" lat.p999_ms
	hyb_row "$wl" "1 client: requests in $HYB_SECS s" lat.requests
	hyb_row "$wl" "50 clients: requests/s" rps
	hyb_row "$wl" "shim CPU per request, 50 clients (µs)" cpu.us
	hyb_row "$wl" "log, 50 clients (bytes/s)" log.bps
	hyb_row "$wl" "pause per checkpoint, 50 clients (ms)" pause
	hyb_row "$wl" "failover: detection (ms)" fo.detection
	hyb_row "$wl" "failover: restore (ms)" fo.restore
	hyb_row "$wl" "failover: replay (ms)" fo.replay
	hyb_row "$wl" "failover: records replayed" fo.records
	hyb_row "$wl" "failover: network (ms)" fo.network
	hyb_row "$wl" "failover: recovery after detection (ms)" fo.recovery
	hyb_row "$wl" "failover: connections reset" fo.reset
	hyb_row "$wl" "failover: the client's longest wait (ms)" fo.wait
	echo
	[[ -z ${def:-} ]] && return 0
	echo "Targets ($wl, hybrid mode at $def, the first hybrid configuration, against runc.v2, same run):"
	echo
	echo "| target | configuration | measured | target | |"
	echo "| --- | --- | --- | --- | --- |"
	r0=$(mean "$wl:runc" lat.mean_ms) v=$(mean "$wl:$def" lat.mean_ms)
	if [[ -n $r0 && -n $v ]]; then
		v=$(awk -v a="$v" -v b="$r0" 'BEGIN { printf "%.6f", (a - b) * 1000 }')
		hyb_target "added single-client latency, mean (µs)" "$def" "$v" "<= 150" "$(awk -v v="$v" 'BEGIN { print (v <= 150) ? 1 : 0 }')"
	fi
	r0=$(mean "$wl:runc" lat.p99_ms) v=$(mean "$wl:$def" lat.p99_ms)
	if [[ -n $r0 && -n $v ]]; then
		v=$(awk -v a="$v" -v b="$r0" 'BEGIN { printf "%.6f", (a - b) * 1000 }')
		hyb_target "added single-client latency, p99 (µs)" "$def" "$v" "<= 1000" "$(awk -v v="$v" 'BEGIN { print (v <= 1000) ? 1 : 0 }')"
	fi
	r0=$(mean "$wl:runc" rps) v=$(mean "$wl:$def" rps)
	if [[ -n $r0 && -n $v ]]; then
		v=$(awk -v a="$v" -v b="$r0" 'BEGIN { printf "%.6f", 100 * (1 - a / b) }')
		hyb_target "50-client throughput overhead (%)" "$def" "$v" "<= 30" "$(awk -v v="$v" 'BEGIN { print (v <= 30) ? 1 : 0 }')"
	fi
	v=$(mean "$wl:$def" fo.recovery)
	[[ -n $v ]] && hyb_target "recovery after detection, replay included (ms)" "$def" "$v" "<= 300" "$(awk -v v="$v" 'BEGIN { print (v <= 300) ? 1 : 0 }')"
	echo
}

# hyb_pictures WORKLOAD: the latency distributions of round 1 (one client)
# side by side, each replicated configuration's newest checkpoints under the
# 50 clients, and its client across its failover; prints the Markdown that
# shows them.
hyb_pictures() {
	local wl=$1 c specs=() heard det tot
	mkdir -p "$PICTURES"
	for c in runc $HYB_CONFIGS; do
		[[ -s $WORK/$wl.$c.1.lat.csv ]] && specs+=("$c=$WORK/$wl.$c.1.lat.csv")
	done
	if ((${#specs[@]})) && "$WORK/bin/plot" cdf -out "$PICTURES/$wl-latency.png" \
		-title "$wl, one client (GET/SET): latency, unreplicated vs each mode" "${specs[@]}"; then
		echo "![$wl: latency distribution of one client, runc.v2 and each configuration](bench/$wl-latency.png)"
		echo
	fi
	for c in $HYB_CONFIGS; do
		[[ -s $WORK/$wl.$c.1.epochs.csv ]] || continue
		"$WORK/bin/plot" epochs -out "$PICTURES/$wl-$c-epochs.png" \
			-title "$wl, $c, 50 clients: the newest checkpoints' pause and acknowledgement" "$WORK/$wl.$c.1.epochs.csv" || continue
		echo "![$wl, $c: pause and acknowledgement of each checkpoint under 50 clients](bench/$wl-$c-epochs.png)"
		echo
	done
	for c in $HYB_CONFIGS; do
		[[ -s $WORK/$wl.$c.1.fo.csv && -s $WORK/$wl.$c.1.fo.times ]] || continue
		read -r heard det tot <"$WORK/$wl.$c.1.fo.times"
		heard=$(date -u -d "$heard" +%s%3N) || continue
		"$WORK/bin/plot" timeline -out "$PICTURES/$wl-$c-failover.png" \
			-title "$wl, $c: one client's replies across lab.sh crash a" \
			-mark "crash of a=$(cat "$WORK/$wl.$c.1.crash")" \
			-mark "b declares a failed=$(awk -v h="$heard" -v d="$det" 'BEGIN { printf "%.0f", h + d }')" \
			-mark "b serves=$(awk -v h="$heard" -v t="$tot" 'BEGIN { printf "%.0f", h + t }')" \
			"$WORK/$wl.$c.1.fo.csv" || continue
		echo "![$wl, $c: each reply's latency across the failover](bench/$wl-$c-failover.png)"
		echo
	done
}

hybrid_section() {
	local wl
	echo "<!-- hybrid: begin (written by make bench, part 4) -->"
	cat <<HYB
## Hybrid mode: Redis and memcached, runc.v2 vs epoch mode vs hybrid mode

Written by \`$CMD\` on $(date -u +%Y-%m-%d) ($(nproc) cores, kernel $(uname -r); load average
$LOAD_BEFORE before the run). Redis ($IMAGE, 100,000 records of 100 bytes by DEBUG
POPULATE) and memcached (rrc.local/memcached, Debian's with four worker threads, the same
records written by the client) in the lab (\`$LAB\`): unreplicated (io.containerd.runc.v2,
$BASE, a macvlan of a's eth0) or replicated a → b by the shim ($SVC), in epoch mode or in
hybrid mode at the checkpoint interval the column names (\`io.rrc.epoch\`). The client is
test/bench/kvclient on the lab client: GET of a random record and SET of 100 bytes,
alternating, one request at a time per connection, every reply checked; one connection for
the latency, 50 for the throughput, $HYB_SECS s each. The shim's CPU time: user + system of the
primary's shim process over the 50-client run, per request. Failover: one client busy while
\`lab.sh crash a\` cuts a 2 s in; the split from b's status file. $HYB_ROUNDS alternating
rounds; means over the rounds.

HYB
	for wl in $HYB_WORKLOADS; do
		hyb_table "$wl"
		hyb_pictures "$wl"
	done
	section_notes "redis|memcached"
	if [[ -s $WORK/hybrid-details ]]; then
		echo "rrcctl status of each replicated round:"
		echo
		echo '```'
		cat "$WORK/hybrid-details"
		echo '```'
	fi
	echo "<!-- hybrid: end -->"
}
