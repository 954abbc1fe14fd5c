# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Part 6 of make bench (sourced by bench.sh, whose helpers it uses; not in
# the default parts, it runs for BENCH_SOAK_MINUTES): replication under a
# CPU-saturating neighbour at the default detection settings (issue 15).
# Redis with 100,000 records replicated a -> b in epoch mode with every
# setting at its default, one client busy all along (kvclient, every reply
# checked), and as many busy loops as the machine has cores, at the
# default priority, outside the lab (a neighbour on the same host). Every
# SOAK_SAMPLE s both status files are read: a false failover is the
# backup promoting while the primary lives, a false degradation the
# primary giving up a backup that lives. At the end, with the neighbour
# still running, `lab.sh crash a`: the real failure must still be detected
# within the default timeout and the client carry on.

SOAK_MINUTES=${BENCH_SOAK_MINUTES:-60}
SOAK_SAMPLE=10
SOAK_CFG=soak

# soak_hogs SECONDS: nproc busy loops for SECONDS; prints their pids.
soak_hogs() {
	local i
	for ((i = 0; i < $(nproc); i++)); do
		# Not on the caller's pipe: mapfile would wait for the loops' end.
		timeout "$1" sh -c 'while :; do :; done' >/dev/null 2>&1 &
		echo $!
	done
}

soak_run() {
	local id=soak$RANDOM secs=$((SOAK_MINUTES * 60)) fa fb sa sb t end hogs client j
	local promoted=0 degraded=0 samples=0 notsync=0
	say "soak: redis, epoch mode with the default settings, one busy client, $(nproc) busy loops beside the lab for $SOAK_MINUTES min"
	start_pair "$SOAK_CFG" 1 "$id" "$IMAGE" -- "${REDIS[@]}" || return 1
	wait_ping "$SVC" 20 && load "$SVC" || { round_note "$SOAK_CFG" 1 "did not answer or load on $SVC"; return 1; }
	fa=$(status_file a "$id") fb=$(status_file b "$id")
	j=$WORK/soak.client.json
	lab exec client "$WORK/bin/kvclient" -proto redis -addr "$SVC:6379" -keys "$KEYS" -seconds $((secs + 20)) \
		-samples "$WORK/soak.lat.csv" >"$j" 2>/dev/null &
	client=$!
	mapfile -t hogs < <(soak_hogs $((secs + 30)))
	t=$SECONDS end=$((SECONDS + secs))
	while ((SECONDS < end)); do
		sleep "$SOAK_SAMPLE"
		sa=$(jq -r .engine.state "$fa" 2>/dev/null) sb=$(jq -r .engine.state "$fb" 2>/dev/null)
		samples=$((samples + 1))
		[[ $sa == in-sync && $sb == in-sync ]] || notsync=$((notsync + 1))
		if [[ $sb == primary-after-failover || $sb == promoting || $sb == fencing ]]; then
			promoted=1
			round_note "$SOAK_CFG" 1 "false failover after $(((SECONDS - t) / 60)) min: b is $sb while a is $sa ($(jq -r '.engine.failover.last_heard // ""' "$fb"))"
			break
		fi
		((SOAK_SAMPLE * samples % 600 < SOAK_SAMPLE)) && say "  $(((SECONDS - t) / 60)) min: a $sa, b $sb, a's checkpoints $(jq .engine.epochs "$fa"), re-pairings $(jq '.engine.repairs // 0' "$fa")"
	done
	degraded=$(jq '.engine.repairs // 0' "$fa")
	rec "$SOAK_CFG" 1 degraded.s "$(jq '.engine.state_seconds.degraded // 0' "$fa")"
	rec "$SOAK_CFG" 1 redials "$(jq '.engine.redials // 0' "$fa")"
	rec "$SOAK_CFG" 1 minutes "$(((SECONDS - t) / 60))"
	rec "$SOAK_CFG" 1 promoted "$promoted"
	rec "$SOAK_CFG" 1 degraded "$degraded"
	rec "$SOAK_CFG" 1 notsync "$notsync"
	rec "$SOAK_CFG" 1 samples "$samples"
	rec "$SOAK_CFG" 1 epochs "$(jq .engine.epochs "$fa")"
	rec "$SOAK_CFG" 1 failed "$(jq '.engine.failed_epochs // 0' "$fa")"
	rec "$SOAK_CFG" 1 pause "$(jq .engine.pause_ms.mean "$fa")"
	rec "$SOAK_CFG" 1 pause90 "$(jq .engine.pause_ms.p90 "$fa")"
	if ((promoted == 0)); then
		say "  crash a, the neighbour still running"
		lab crash a >/dev/null 2>&1
		if wait_status b "$id" '.engine.state == "primary-after-failover"' 30; then
			rec "$SOAK_CFG" 1 detection "$(jq .engine.failover.detection_ms "$fb")"
			rec "$SOAK_CFG" 1 total "$(jq .engine.failover.total_ms "$fb")"
			say "  failover: detection $(jq .engine.failover.detection_ms "$fb") ms, total $(jq .engine.failover.total_ms "$fb") ms"
		else
			round_note "$SOAK_CFG" 1 "no failover after the crash of a (b: $(state_of b "$id"))"
		fi
		sleep 3
	fi
	kill "${hogs[@]}" 2>/dev/null || true
	kill "$client" 2>/dev/null || true
	wait "$client" 2>/dev/null || true
	rec "$SOAK_CFG" 1 requests "$(jq '.requests // 0' "$j" 2>/dev/null || echo 0)"
	local err
	err=$(jq -r '.error // ""' "$j" 2>/dev/null || echo "no report")
	[[ -n $err ]] && round_note "$SOAK_CFG" 1 "client: $err"
	rec "$SOAK_CFG" 1 gap "$(jq '.longest_gap_ms // 0' "$j" 2>/dev/null || echo 0)"
	return 0
}

soak_section() {
	local v
	echo "<!-- soak: begin (written by make bench, part 6) -->"
	cat <<SOAK
## False failovers under a CPU-saturating neighbour

Written by \`$CMD\` on $(date -u +%Y-%m-%d) ($(nproc) cores, kernel $(uname -r); load average
$LOAD_BEFORE before the run). Redis ($IMAGE, 100,000 records) replicated a → b in epoch mode
with every setting at its default (heartbeat 30 ms, 3 misses), in the lab (\`$LAB\`); one
client busy all along (test/bench/kvclient, every reply checked); $(nproc) busy loops
beside the lab at the default priority for the whole run. Both status files read every
$SOAK_SAMPLE s: a false failover is b promoting while a lives; a false degradation, a giving
up a backup that lives (its re-pairings). Then \`lab.sh crash a\` with the loops still
running. Target (issue 15): no false failover in an hour; a real failure detected
≤ 100 ms after the last heartbeat.

| figure | value |
| --- | --- |
| minutes under the neighbour | $(fmt "$(mean "$SOAK_CFG" minutes)") |
| false failovers (b promoted while a lived) | $(fmt "$(mean "$SOAK_CFG" promoted)") |
| false degradations (a re-paired with a live backup) | $(fmt "$(mean "$SOAK_CFG" degraded)") |
| time a ran degraded (s) | $(fmt "$(mean "$SOAK_CFG" degraded.s)") |
| peer connections lost and dialled again at once, output held | $(fmt "$(mean "$SOAK_CFG" redials)") |
| samples not in sync on both sides (of all) | $(fmt "$(mean "$SOAK_CFG" notsync)") of $(fmt "$(mean "$SOAK_CFG" samples)") |
| checkpoints (failed) | $(fmt "$(mean "$SOAK_CFG" epochs)") ($(fmt "$(mean "$SOAK_CFG" failed)")) |
| pause per checkpoint, mean / p90 (ms) | $(fmt "$(mean "$SOAK_CFG" pause)") / $(fmt "$(mean "$SOAK_CFG" pause90)") |
| client requests (all replies checked) | $(fmt "$(mean "$SOAK_CFG" requests)") |
| the client's longest wait (ms) | $(fmt "$(mean "$SOAK_CFG" gap)") |
| real failure at the end: detection (ms) | $(fmt "$(mean "$SOAK_CFG" detection)") |
| real failure at the end: last heard → reachable (ms) | $(fmt "$(mean "$SOAK_CFG" total)") |

SOAK
	v=$(mean "$SOAK_CFG" promoted)
	echo "Target, no false failover in the run: $([[ $(fmt "$v") == 0.000 ]] && awk -v m="$(mean "$SOAK_CFG" minutes)" 'BEGIN { exit !(m >= 60) }' && echo "**met**" || echo "**not met** (or the run was shorter than an hour)")."
	echo
	section_notes "$SOAK_CFG"
	echo "<!-- soak: end -->"
}
