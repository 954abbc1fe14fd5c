# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Part 5 of make bench (sourced by bench.sh, whose helpers it uses): the CPU an
# idle replicated container costs. Redis with 100,000 records of 100 bytes,
# replicated a -> b in epoch mode at 100 ms, no client at all, with
# io.rrc.skip-idle false (every tick a checkpoint) and true (no checkpoint
# while no packet enters or leaves), in alternating rounds: the CPU time
# (user + system, the shims' and every process they waited for: CRIU,
# nsenter, ...) of both shims over IDLE_SECS s, as a share of one core.

IDLE_SECS=${BENCH_IDLE_SECONDS:-20}
IDLE_ROUNDS=${BENCH_IDLE_ROUNDS:-2}
IDLE_CONFIGS="skip-idle-false skip-idle-true"

# pair_ticks ID: clock ticks of both hosts' io.rrc.v1 shims of ID, their
# reaped children included.
pair_ticks() {
	local pid sum=0
	for pid in $(pgrep -f -- "containerd-shim-rrc-v1 .*-id $1( |$)"); do
		sum=$((sum + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pid/stat")))
	done
	echo "$sum"
}

# idle_round CONFIG ROUND
idle_round() {
	local c=$1 round=$2 id=idle$RANDOM t0 t1 f
	local cfg=idle:$c skip=${1#skip-idle-}
	say "idle round $round/$IDLE_ROUNDS: redis, epoch mode at 100ms, io.rrc.skip-idle=$skip, no client for $IDLE_SECS s"
	start_pair "$cfg" "$round" "$id" "$IMAGE" --annotation io.rrc.epoch=100ms --annotation "io.rrc.skip-idle=$skip" -- "${REDIS[@]}" || return 1
	wait_ping "$SVC" 20 && load "$SVC" || { round_note "$cfg" "$round" "did not answer or load on $SVC"; return 1; }
	sleep 3 # the load's checkpoints commit
	t0=$(pair_ticks "$id")
	sleep "$IDLE_SECS"
	t1=$(pair_ticks "$id")
	f=$(status_file a "$id")
	rec "$cfg" "$round" cpu.pct "$(awk -v a="$t0" -v b="$t1" -v h="$CLK_TCK" -v s="$IDLE_SECS" 'BEGIN { print (b - a) / h / s * 100 }')"
	rec "$cfg" "$round" epochs "$(jq .engine.epochs "$f")"
	rec "$cfg" "$round" idle "$(jq '.engine.idle_ticks // 0' "$f")"
	say "  pair CPU $(awk -v a="$t0" -v b="$t1" -v h="$CLK_TCK" -v s="$IDLE_SECS" 'BEGIN { printf "%.1f", (b - a) / h / s * 100 }') % of a core; $(jq .engine.epochs "$f") checkpoints, $(jq '.engine.idle_ticks // 0' "$f") idle ticks"
}

idle_rounds() {
	local round c
	for round in $(seq 1 "$IDLE_ROUNDS"); do
		for c in $IDLE_CONFIGS; do
			idle_round "$c" "$round" || true
			lab_fresh
		done
	done
}

idle_section() {
	local c line
	echo "<!-- idle: begin (written by make bench, part 5) -->"
	cat <<IDL
## An idle replicated container

Written by \`$CMD\` on $(date -u +%Y-%m-%d) ($(nproc) cores, kernel $(uname -r); load average
$LOAD_BEFORE before the run). Redis ($IMAGE, 100,000 records of 100 bytes by DEBUG POPULATE)
replicated a → b in epoch mode at 100 ms in the lab (\`$LAB\`), no client at all for
$IDLE_SECS s after the load's checkpoints: CPU time (user + system) of both hosts' shims and
of every process they started and waited for (CRIU, nsenter), as a share of one core, with
\`io.rrc.skip-idle\` false (a checkpoint every tick) and true (the default: no checkpoint
while no packet enters or leaves the container). $IDLE_ROUNDS alternating rounds; means over
the rounds. Target (issue 18): ≤ 5 % of one core for the whole pair.

| figure |$(for c in $IDLE_CONFIGS; do printf ' %s |' "$c"; done)
| --- |$(for c in $IDLE_CONFIGS; do printf ' --- |'; done)
IDL
	line="| pair CPU, % of one core |"
	for c in $IDLE_CONFIGS; do line+=" $(fmt "$(mean "idle:$c" cpu.pct)") |"; done
	echo "$line"
	line="| checkpoints (whole run) |"
	for c in $IDLE_CONFIGS; do line+=" $(fmt "$(mean "idle:$c" epochs)") |"; done
	echo "$line"
	line="| idle ticks (whole run) |"
	for c in $IDLE_CONFIGS; do line+=" $(fmt "$(mean "idle:$c" idle)") |"; done
	echo "$line"
	echo
	section_notes idle
	echo "<!-- idle: end -->"
}
