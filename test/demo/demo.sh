#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# make demo: the failover story of io.rrc.v1 in the lab. Redis replicated
# from host a (primary) to host b (backup), a client keeping one connection
# busy, host a crashed, the client carrying on against the restored Redis on
# b, the failover timeline. Leaves the machine as it found it (KEEP_LAB=1
# keeps the lab up to look around; DEMO_MODE=hybrid runs it in hybrid mode;
# the picture of the replies across the failover goes to DEMO_PICTURES, default
# /tmp/rrc-demo).
# See docs/DEMO.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LABSH=$REPO/test/lab/lab.sh
export LAB=${LAB:-rrcdemo} LAB_SUBNET=${LAB_SUBNET:-10.76.0}
export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$PATH
ID=redis
A=$LAB_SUBNET.1 B=$LAB_SUBNET.2 SVC=$LAB_SUBNET.200
RUN_BEFORE_CRASH=${RUN_BEFORE_CRASH:-4}
MODE=${DEMO_MODE:-epoch}
[[ $MODE == epoch || $MODE == hybrid ]] || { echo "demo: DEMO_MODE=$MODE: epoch or hybrid" >&2; exit 2; }
hybrid() { [[ $MODE == hybrid ]]; }
DEMO=$(mktemp -d /tmp/rrcdemo.XXXXXX)
PICTURES=${DEMO_PICTURES:-/tmp/rrc-demo} # kept after the demo
CLIENT_PID=
WATCH_PIDS=() # ctr events and rrcctl metrics on b

step() { printf '\n== %s\n' "$*"; }
say() { printf '%s\n' "$*"; }
now() { date -u +%H:%M:%S.%3N; }
lab() { "$LABSH" "$@"; }
# rrcctl status as an operator on host H types it (the lab's socket and
# namespace, and the host's shim configuration for its state_dir).
status() { rrcctl -address "/run/$LAB/$1/containerd.sock" -n "$LAB-$1" -config "$DEMO/$1.toml" status; }
# has_state HOST STATE: the container's line in rrcctl status says STATE.
has_state() { status "$1" 2>/dev/null | awk -v id="$ID" '$1 == id' | grep -qw -- "$2"; }
wait_state() { # HOST STATE SECONDS
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		has_state "$1" "$2" && return 0
		sleep 0.1
	done
	say "demo: host $1 did not reach $2 within $3 s; its status:"
	status "$1" || true
	say "demo: the shim's last lines in host $1's containerd log:"
	grep -a "id=$ID" "/run/$LAB/$1/containerd.log" 2>/dev/null | grep -av -e level=debug -e 'checkpoint committed' | tail -15 || true
	return 1
}
client_lines() { sed -n "$1,\$p" "$DEMO/client.log" | grep '^client: [0-9]' || true; }

cleanup() {
	local rc=$? p
	for p in "${WATCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${WATCH_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ -n $CLIENT_PID ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
		kill "$CLIENT_PID" 2>/dev/null || true
		wait "$CLIENT_PID" 2>/dev/null || true
	fi
	if [[ ${KEEP_LAB:-} == 1 ]]; then
		say "demo: lab $LAB left up, files in $DEMO (test/lab/lab.sh down, with LAB=$LAB LAB_SUBNET=$LAB_SUBNET)"
		return
	fi
	step "cleaning up: lab down"
	LAB_QUIET=1 lab down
	rm -rf "$DEMO"
	if ((rc == 0)); then say "demo: done, nothing left behind"
	elif ((rc == 130)); then say "demo: interrupted, lab removed"
	else say "demo: FAILED (exit $rc), lab removed"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "io.rrc.v1 demo: a replicated Redis survives the crash of its host"
say "Hosts a ($A) and b ($B), each with its own containerd, and a client"
say "($LAB_SUBNET.100), on one LAN: network namespaces on this machine (docs/LAB.md)."
if hybrid; then
	say "Redis runs on a; b holds a copy of its state, refreshed every second, and a log"
	say "of everything that reached Redis since (hybrid mode)."
else
	say "Redis runs on a; b holds a copy of its state, refreshed every 100 ms."
fi
say "Clients use the service address $SVC, which moves to b if a dies."

step "1. peer certificates: the two shims talk over mutual TLS"
say "\$ rrcctl pki -dir $DEMO/pki -name $A -name $B"
rrcctl pki -dir "$DEMO/pki" -name "$A" -name "$B" | sed 's/^/  /'
for h in a b; do
	ip=$LAB_SUBNET.$([[ $h == a ]] && echo 1 || echo 2)
	st=/run/$LAB/$h/rrc
	cat >"$DEMO/$h.toml" <<TOML
state_dir = "$st"
image_dir = "$st/images"
checkpoint_dir = "$st/checkpoints"

[peer_tls]
ca_file = "$DEMO/pki/ca.pem"
cert_file = "$DEMO/pki/$ip.pem"
key_file = "$DEMO/pki/$ip-key.pem"
TOML
done
say "each host's shim configuration names its certificate, e.g. host a's:"
sed 's/^/  /' "$DEMO/a.toml"

step "2. the lab up (each containerd gets its host's file as RRC_SHIM_CONFIG)"
export LAB_SHIM_CONFIG=$DEMO/@HOST@.toml
LAB_QUIET=1 lab up
lab status 2>&1 | sed 's/^/  /' | head -8

say "An operator's windows on b, left running: containerd's events, and the"
say "host's metrics endpoint (docs/OPERATIONS.md):"
say "  \$ ctr events &"
say "  \$ rrcctl metrics -listen 127.0.0.1:0 &"
ctr --address "/run/$LAB/b/containerd.sock" events >"$DEMO/events-b.log" 2>&1 &
WATCH_PIDS+=($!)
rrcctl -config "$DEMO/b.toml" metrics -listen 127.0.0.1:0 2>"$DEMO/metrics.log" &
WATCH_PIDS+=($!)
METRICS=
for _ in $(seq 1 50); do
	METRICS=$(grep -o 'http://[0-9.:]*/metrics' "$DEMO/metrics.log" || true)
	[[ -n $METRICS ]] && break
	sleep 0.1
done
[[ -n $METRICS ]] || { say "demo: rrcctl metrics did not start:"; cat "$DEMO/metrics.log"; exit 1; }
say "  metrics of b at $METRICS"
# Each checkpoint's pause and acknowledgement, for the picture: a's status
# file keeps the newest 64; copied twice a second, none is missed.
(
	f=/run/$LAB/a/rrc/status/$LAB-a/$ID.json
	while sleep 0.5; do jq -c '.engine.recent_epochs[]?' "$f" 2>/dev/null || true; done
) >"$DEMO/epochs.jsonl" &
WATCH_PIDS+=($!)

# Both sides: the service address on the hosts' eth0; heartbeats at their
# defaults (30 ms, failure after 3 missed).
COMMON=(--annotation "io.rrc.service-ip=$SVC/24" --annotation io.rrc.service-link=eth0)
hybrid && COMMON+=(--annotation io.rrc.mode=hybrid)
step "3. the backup on b first, then the primary on a"
say "on b:"
BACKUP=(run -d --runtime io.rrc.v1 --annotation io.rrc.role=backup
	--annotation "io.rrc.listen=$B:7100" --annotation "io.rrc.peer-name=$A" "${COMMON[@]}" rrc.local/redis:latest "$ID")
PRIMARY=(run -d --runtime io.rrc.v1 --annotation io.rrc.role=primary
	--annotation "io.rrc.peer=$B:7100" "${COMMON[@]}" rrc.local/redis:latest "$ID")
# show ARGS...: a ctr command as a user types it, one annotation a line.
show() {
	local out="  \$ ctr" a next=
	for a in "$@"; do
		if [[ $next == 1 ]]; then out+=" $a"; next=
		elif [[ $a == --annotation ]]; then out+=$' \\\n      --annotation'; next=1
		elif [[ $a == rrc.local/* ]]; then out+=$' \\\n      '"$a"
		else out+=" $a"; fi
	done
	printf '%s\n' "$out"
}
show "${BACKUP[@]}"
lab ctr b "${BACKUP[@]}"
say "on a:"
show "${PRIMARY[@]}"
t0=$(date +%s.%N)
lab ctr a "${PRIMARY[@]}"
wait_state a in-sync 60
wait_state b in-sync 20
say "in sync $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s after ctr run on a"
sleep 1.5 # a few epochs for the figures
for h in a b; do
	say "on $h: \$ ctr task ls; rrcctl status"
	lab ctr "$h" task ls | sed 's/^/  /'
	status "$h" | sed 's/^/  /'
done
say "b's task is RUNNING but runs nothing: a standby with the last checkpoint."
if hybrid; then
	say "Every second a is paused for a few ms and checkpointed; meanwhile every packet"
	say "that reaches Redis is logged to b, and a reply is held only until b holds the"
	say "log up to it (so a crash never loses an answered write: b replays the log)."
else
	say "Every 100 ms a is paused for a few ms and checkpointed; its replies are"
	say "held until b has the checkpoint (so a crash never loses an answered write)."
fi

step "4. the client: one connection to $SVC:6379, INCR + SET every 50 ms"
for _ in $(seq 1 100); do
	[[ $(lab exec client redis-cli -h "$SVC" PING 2>/dev/null) == PONG ]] && break
	sleep 0.1
done
go build -o "$DEMO/client" "$REPO/test/demo/client"
"$DEMO/client" -netns "/run/netns/$LAB-client" -addr "$SVC:6379" -samples "$DEMO/replies.csv" >"$DEMO/client.log" 2>&1 &
CLIENT_PID=$!
sleep "$RUN_BEFORE_CRASH"
client_lines 1
seen=$(wc -l <"$DEMO/client.log")
if hybrid; then
	say "Each reply waited only for b's acknowledgement of the log up to it: a round"
	say "trip to b, not an epoch (hybrid mode, docs/HYBRID.md)."
else
	say "Each reply is held until b has the checkpoint of the epoch it belongs to"
	say "(output commit): that is why a reply takes an epoch or two above, not 1 ms."
fi

step "5. crash host a"
say "lab.sh crash a: a fail-stop, like pulling the plug. First a's network link"
say "is cut (nothing more leaves a: no FIN, no RST), then every process of"
say "host a is killed: its containerd, the shim, Redis, CRIU."
crash_at=$(now)
lab crash a 2>&1 | sed 's/^/  /'
say "crashed at $crash_at"
wait_state b primary-after-failover 30
say "b took over (state primary-after-failover) by $(now)"
sleep 3

step "6. the client carries on, on the same connection"
client_lines "$((seen + 1))"

step "7. the failover, as b tells it"
say "on b: \$ rrcctl status; ctr task ls"
status b | sed 's/^/  /'
lab ctr b task ls | sed 's/^/  /'
say "detection: from the last heartbeat heard from a to declaring a failed;"
say "restore: CRIU restores Redis and its TCP connections from the last"
say "checkpoint; network: the service address comes up on b (gratuitous ARP)."
hybrid && say "replay: before the network, b fed the restored Redis what the log holds after the checkpoint and checked that its replies were the ones a had given."
say "on b: the replication events ctr events printed (since step 2):"
grep -a ' /rrc/' "$DEMO/events-b.log" | sed 's/^[^ ]* \([^ ]*\) [^ ]* [^ ]* [^ ]* /  \1 /' | cut -c1-240
say "on b: \$ curl -s $METRICS | grep -e '^rrc_failover' -e '^rrc_state{.*} 1\$'"
curl -s "$METRICS" | grep -e '^rrc_failover' -e '^rrc_state{.*} 1$' | sed 's/^/  /'
say "b's task is now the restored Redis (its pid above). It runs alone now,"
say "without a backup, so its replies are no longer held: 20 rounds a second."
status b | grep 'failover from epoch' >"$DEMO/failover" || true
status b | grep 'replay of the log' >"$DEMO/replay" || true

step "8. stop the client: its summary"
kill -TERM "$CLIENT_PID"
crc=0
wait "$CLIENT_PID" || crc=$?
CLIENT_PID=
sed -n '/^client: stopped/,$p' "$DEMO/client.log"
if ((crc != 0)); then
	say "demo: the client reports a failure (exit $crc)"
	exit 1
fi

step "9. the timeline (UTC)"
# ms_after TIME MS: TIME (HH:MM:SS.mmm or RFC 3339) plus MS milliseconds.
ms_after() { date -u -d "@$(echo "$(date -u -d "$1" +%s.%N) + $2 / 1000" | bc -l)" +%H:%M:%S.%3N; }
f=$(cat "$DEMO/failover")
field() { sed -n "s/.* $1 \([0-9.]*\) ms.*/\1/p" <<<"$f"; }
heard=$(sed -n 's/.*last heard \([^)]*\)).*/\1/p' <<<"$f")
det=$(field detection) rest=$(field restore) net=$(field network) tot=$(field total)
gap=$(sed -n 's/.*longest wait between two replies: \([0-9]*\) ms, from \([0-9:.]*\) to \([0-9:.]*\).*/\1 \2 \3/p' "$DEMO/client.log")
read -r gap_ms gap_from gap_to <<<"$gap"
{
	# The client's longest wait is the failover's unless something else was
	# slower (then it is not part of this timeline).
	[[ $gap_to > $crash_at ]] && printf '  %s  the client gets its last reply from a\n' "$gap_from"
	printf '  %s  lab.sh crash a: link cut, then every process killed\n' "$crash_at"
	printf '  %s  b hears from a for the last time\n' "$(date -u -d "$heard" +%H:%M:%S.%3N)"
	printf '  %s  b declares a failed (%s ms without heartbeats)\n' "$(ms_after "$heard" "$det")" "$det"
	replay=$(sed -n 's/.*replay of the log after the checkpoint: \([0-9.]*\) ms, \([0-9]*\) records.*/\1 \2/p' "$DEMO/replay" 2>/dev/null)
	if [[ -n $replay ]]; then
		read -r rms rrec <<<"$replay"
		printf '  %s  b has restored Redis from its last checkpoint (%s ms) and replayed the %s records of the log after it (%s ms)\n' "$(ms_after "$heard" "$(echo "$tot - $net" | bc -l)")" "$rest" "$rrec" "$rms"
	else
		printf '  %s  b has restored Redis from its last checkpoint (%s ms)\n' "$(ms_after "$heard" "$(echo "$tot - $net" | bc -l)")" "$rest"
	fi
	printf '  %s  b answers on %s: failover done, %s ms after last heard\n' "$(ms_after "$heard" "$tot")" "$SVC" "$tot"
	[[ $gap_to > $crash_at ]] && printf '  %s  the client gets its next reply, on the same connection (%s ms after the last)\n' "$gap_to" "$gap_ms"
	true
} | sort -s -k1,1
declared=$(echo "$(date -u -d "$heard" +%s%3N) + $det" | bc)
if (($(echo "$declared < $(date -u -d "$crash_at" +%s%3N)" | bc))); then
	say "demo: FALSE FAILOVER: b declared a failed before the crash. b missed a's heartbeats"
	say "while a was alive (a machine too loaded for the detection bound, io.rrc.heartbeat x"
	say "io.rrc.heartbeat-misses); both served until the crash: a split brain that the fencing"
	say "of a later release is to prevent."
	exit 1
fi
say "Whatever the client waits beyond the failover is TCP: a request lost with"
say "a is resent on the client's retransmission timer (200 ms, then doubling),"
say "not the moment b comes up (docs/DEMO.md)."

step "10. the picture"
# unix_ms TIME: TIME (HH:MM:SS.mmm today, or RFC 3339) in Unix milliseconds.
unix_ms() { date -u -d "$1" +%s%3N; }
mkdir -p "$PICTURES"
go build -o "$DEMO/plot" "$REPO/test/plot"
"$DEMO/plot" timeline -out "$PICTURES/failover.png" -title "io.rrc.v1 demo ($MODE mode): each reply's latency, host a crashed" \
	-mark "crash of a=$(unix_ms "$crash_at")" \
	-mark "b declares a failed=$(echo "$(unix_ms "$heard") + $det" | bc)" \
	-mark "b serves=$(echo "$(unix_ms "$heard") + $tot" | bc)" "$DEMO/replies.csv"
say "each reply's latency over time, with the crash and the failover: $PICTURES/failover.png"
jq -r '[.epoch, .pause_ms, .ack_ms] | @csv' "$DEMO/epochs.jsonl" | sort -t, -k1,1n -u >"$DEMO/epochs.csv"
if [[ -s $DEMO/epochs.csv ]]; then
	"$DEMO/plot" epochs -out "$PICTURES/epochs.png" -title "io.rrc.v1 demo ($MODE mode): each checkpoint of a, until the crash" "$DEMO/epochs.csv"
	say "each checkpoint's pause and acknowledgement on a: $PICTURES/epochs.png"
fi
