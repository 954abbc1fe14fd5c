#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Runs containerd's own client integration tests (package
# github.com/containerd/containerd/v2/integration/client, at the version the
# main go.mod pins) against host a's containerd of a lab, with TEST_RUNTIME
# set to each runtime asked for, and checks the results. See
# docs/CONTAINERD-INTEGRATION.md.
#
#   test/integration/run.sh [options] [RUNTIME...] [-- extra args for the test binary]
#
#   -r, --runtime RT   (or a bare RUNTIME argument)
#                      io.rrc.v1 (default), io.containerd.runc.v2, or "both":
#                      runc first, then rrc; rrc must pass every test runc
#                      passed. Repeatable.
#   -o, --out DIR      where results go (default /tmp/rrcit-results):
#                      RT.json (go test -json), RT.log (verbose text),
#                      summary.md, containerd/registry logs
#   --standalone       no lab: a private containerd (/var/lib/rrcit-standalone,
#                      /run/rrcit-standalone) in a private network namespace
#   --run REGEX        only tests matching REGEX (-test.run)
#   --skip REGEX       also skip tests matching REGEX (-test.skip)
#   --no-expect        do not check failures against known-failures.txt
#   --keep             leave the lab/daemon and registry up (debugging)
#
# Environment: LAB (default rrcit), LAB_SUBNET (default 10.80.0),
# LAB_SHIM_PATH (a directory with a development build of
# containerd-shim-rrc-v1, put first on PATH for the lab's and the tests' own
# daemons instead of what make install put in /usr/local/bin), CRIU=0 to
# skip the checkpoint tests even when criu works. CI=true (make test sets
# it): nothing may be left out, so a CRIU that does not work, CRIU=0 or a
# missing mkfs.xfs is an error before anything runs, and any test or
# subtest that skips fails the run.
#
# Exit status: 0 when every failure of every runtime is in
# known-failures.txt, and (with "both") io.rrc.v1 passed every test that
# io.containerd.runc.v2 passed, and under CI no test skipped; 1 otherwise.

# The whole script is one brace group: bash parses it completely before
# running it, so editing this file while a run is going on is harmless.
{
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PKG=github.com/containerd/containerd/v2/integration/client
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
[[ -z ${LAB_SHIM_PATH:-} ]] || export PATH=$LAB_SHIM_PATH:$PATH
export LAB=${LAB:-rrcit} LAB_SUBNET=${LAB_SUBNET:-10.80.0}
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY

RUNTIMES=()
OUT=/tmp/rrcit-results
STANDALONE=0
RUN=""
SKIP=""
EXPECT=1
KEEP=0
EXTRA=()
while [[ $# -gt 0 ]]; do
	case $1 in
	-r | --runtime) RUNTIMES+=("$2"); shift 2 ;;
	io.* | both) RUNTIMES+=("$1"); shift ;;
	-o | --out) OUT=$2; shift 2 ;;
	--standalone) STANDALONE=1; shift ;;
	--run) RUN=$2; shift 2 ;;
	--skip) SKIP=$2; shift 2 ;;
	--no-expect) EXPECT=0; shift ;;
	--keep) KEEP=1; shift ;;
	--) shift; EXTRA=("$@"); break ;;
	-h | --help) sed -n '5,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
[[ ${#RUNTIMES[@]} -gt 0 ]] || RUNTIMES=(io.rrc.v1)
if [[ " ${RUNTIMES[*]} " == *" both "* ]]; then
	RUNTIMES=(io.containerd.runc.v2 io.rrc.v1)
fi
for rt in "${RUNTIMES[@]}"; do
	case $rt in
	io.rrc.v1) shim=containerd-shim-rrc-v1 ;;
	io.containerd.runc.v2) shim=containerd-shim-runc-v2 ;;
	*) echo "run.sh: unknown runtime $rt" >&2; exit 2 ;;
	esac
	command -v "$shim" >/dev/null || { echo "run.sh: $shim not on PATH (runtime $rt)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "run.sh: must run as root" >&2; exit 1; }
for b in containerd go unshare nsenter ip; do
	command -v "$b" >/dev/null || { echo "run.sh: $b not on PATH" >&2; exit 1; }
done

say() { echo "run.sh: $*" >&2; }
# CI: a true value of $CI (as Go's strconv.ParseBool reads it, like the
# tests' package prereq).
CI_ON=0
case ${CI:-} in 1 | t | T | true | TRUE | True) CI_ON=1 ;; esac
# One run at a time on this machine: pass 2 uses fixed paths
# (/run/containerd-test) and the lab name is fixed.
exec 9>/run/rrcit-run.lock
flock -n 9 || { say "another run.sh is running (lock /run/rrcit-run.lock)"; exit 1; }
if ! command -v mkfs.xfs >/dev/null; then
	[[ $CI_ON == 1 ]] && { say "CI=$CI: no mkfs.xfs (apt-get install xfsprogs, make setup): TestMountAtRuntime would skip"; exit 1; }
	say "note: no mkfs.xfs (apt-get install xfsprogs): TestMountAtRuntime will skip"
fi
# The checkpoint tests need a CRIU that works; without one they are run
# with -no-criu (skipped), which CI does not accept.
CRIU_ARGS=(-no-criu)
if [[ ${CRIU:-1} == 0 ]]; then
	[[ $CI_ON == 1 ]] && { say "CI=$CI: CRIU=0 would skip the checkpoint tests"; exit 1; }
	say "note: CRIU=0: the checkpoint tests skip (-no-criu)"
elif ! command -v criu >/dev/null; then
	[[ $CI_ON == 1 ]] && { say "CI=$CI: no criu on PATH (make setup): the checkpoint tests would skip"; exit 1; }
	say "note: no criu on PATH: the checkpoint tests skip (-no-criu)"
elif ! out=$(criu check 2>&1); then
	[[ $CI_ON == 1 ]] && { say "CI=$CI: 'criu check' fails, the checkpoint tests would skip: $out"; exit 1; }
	say "note: 'criu check' fails: the checkpoint tests skip (-no-criu): $out"
else
	CRIU_ARGS=()
fi
t_start=$SECONDS
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.raw "$OUT"/*.seconds "$OUT"/*.failures.txt "$OUT"/summary.md
WORK=$(mktemp -d /tmp/rrcit.XXXXXX)
BIN=$WORK/bin
mkdir -p "$BIN" "$WORK/tmp"

# --- teardown (always) ---------------------------------------------------------
REG_PID=""
TEST_PID=""
DAEMON_STATE=""
DAEMON_PID=""
PASS2_STARTED=0
LAB_UP=0
SA_NS=rrcit-standalone
SA_ROOT=/var/lib/rrcit-standalone
SA_STATE=/run/rrcit-standalone
# the daemon that TestMain starts in pass 2 (paths fixed by the test package)
TESTD_ROOT=/var/lib/containerd-test
TESTD_STATE=/run/containerd-test
# kill_arg ARG: kill -9 every process that has ARG as one of its arguments
# (the daemon and shims of a test daemon carry its socket path).
kill_arg() {
	local d
	for d in /proc/[0-9]*; do
		if tr '\0' '\n' 2>/dev/null <"$d/cmdline" | grep -qxF -- "$1"; then
			kill -9 "${d#/proc/}" 2>/dev/null || true
		fi
	done
}

# kill_prefix PREFIX: kill -9 every process with an argument under PREFIX
# (daemons that tests start themselves, with their config and sockets in
# t.TempDir(), which is under $WORK/tmp; and their shims).
kill_prefix() {
	local d
	for d in /proc/[0-9]*; do
		if tr '\0' '\n' 2>/dev/null <"$d/cmdline" | grep -qF -- "$1"; then
			[[ ${d#/proc/} == "$$" ]] || kill -9 "${d#/proc/}" 2>/dev/null || true
		fi
	done
}

# unmount_under DIR: lazily unmount everything mounted under DIR, deepest first.
unmount_under() {
	awk -v d="$1" '{ if (index($5, d "/") == 1) print length($5) " " $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r mp; do umount -l "$(printf '%b' "$mp")" 2>/dev/null || true; done
}

# reap_containers STATEDIR: force-delete (kill, unmount, remove cgroups) the
# runc containers whose bundle is under STATEDIR, the state dir of a daemon
# of ours. The runc v2 shim keeps runc's state in /run/containerd/runc/<ns>
# whatever the daemon, so a crashed run would leave "container with given
# ID already exists" behind for the next one.
reap_containers() {
	local st=$1 r id bundle
	for r in /run/containerd/runc/*/; do
		[[ -d $r ]] || continue
		runc --root "$r" list 2>/dev/null | awk 'NR > 1 {print $1, $4}' | while read -r id bundle; do
			if [[ $bundle == "$st/"* ]]; then
				runc --root "$r" resume "$id" 2>/dev/null || true # a frozen task ignores SIGKILL
				runc --root "$r" delete --force "$id" 2>/dev/null || true
			fi
		done
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ $KEEP == 1 ]]; then
		say "--keep: leaving things up (work dir $WORK)"
		exit "$rc"
	fi
	if [[ -n $TEST_PID ]]; then
		kill -TERM "$TEST_PID" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$TEST_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$TEST_PID" 2>/dev/null || true
	fi
	if [[ $PASS2_STARTED == 1 ]]; then
		kill_arg "$TESTD_STATE/containerd.sock"
		reap_containers "$TESTD_STATE"
	fi
	kill_prefix "$WORK/tmp/"
	reap_containers "$WORK/tmp"
	env_down
	unmount_under "$WORK"
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# --- build ---------------------------------------------------------------------
want=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
have=$(cd "$HERE/suite" && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
if [[ -z $want || $want != "$have" ]]; then
	say "containerd version mismatch: go.mod pins '${want}', test/integration/suite/go.mod has '${have}'"
	say "update it: (cd test/integration/suite && go get -t $PKG@$want && go mod tidy)"
	exit 1
fi
say "building the $PKG@$have test binary, the registry and the images"
(cd "$HERE/suite" && go test -c -o "$BIN/client.test" "$PKG" &&
	go build -o "$BIN/runc-fp" github.com/containerd/containerd/v2/integration/failpoint/cmd/runc-fp)
# TestIssue9103 and TestIssue10589 run tasks with BinaryName "runc-fp"
# (containerd's failpoint wrapper of runc), which the shim looks up on the
# daemon's PATH.
if ! cmp -s "$BIN/runc-fp" /usr/local/bin/runc-fp; then
	say "installing runc-fp (containerd's failpoint runc wrapper, $have) into /usr/local/bin"
	install -m 0755 "$BIN/runc-fp" /usr/local/bin/runc-fp
fi
(cd "$ROOT" && go build -o "$BIN/registry" ./test/registry/cmd/registry &&
	go build -o "$BIN/ocicompose" ./test/registry/cmd/ocicompose &&
	go build -o "$BIN/imagebuild" ./contrib/imagebuild &&
	go build -o "$BIN/report" ./test/integration/report)
IMAGEBUILD=$BIN/imagebuild OCICOMPOSE=$BIN/ocicompose "$HERE/build-images.sh" "$WORK/images" >&2
PKGDIR=$(cd "$HERE/suite" && go list -f '{{.Dir}}' "$PKG")

# --- environment: daemon + registry, fresh for each runtime ----------------------
# The test binary, the registry and the daemon share one network namespace
# (host a's); the test binary gets its own mount namespace for /etc/hosts.
# The client tests are not idempotent against a daemon that already ran them
# (images, snapshots and containers of the "testing" namespace remain), so
# every runtime gets a fresh lab (or standalone daemon).

standalone_down() {
	if [[ -n $DAEMON_PID ]]; then
		kill "$DAEMON_PID" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$DAEMON_PID" 2>/dev/null || true
		DAEMON_PID=""
	fi
	kill_arg "$SA_STATE/containerd.sock" # its shims
	awk -v d="$SA_STATE" -v r="$SA_ROOT" '{ if (index($5, d) == 1 || index($5, r) == 1) print length($5) " " $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r mp; do umount -l "$(printf '%b' "$mp")" 2>/dev/null || true; done
	ip netns delete "$SA_NS" 2>/dev/null || true
	rm -rf "$SA_STATE" "$SA_ROOT"
}

standalone_up() {
	ip netns add "$SA_NS"
	ip -n "$SA_NS" link set lo up
	NSPATH=/run/netns/$SA_NS
	ADDRESS=$SA_STATE/containerd.sock
	HOSTSDIR=$SA_STATE/certs.d
	mkdir -p "$SA_STATE" "$SA_ROOT"
	cat >"$SA_STATE/config.toml" <<EOF
version = 3
root = '$SA_ROOT'
state = '$SA_STATE'
[grpc]
  address = '$ADDRESS'
[ttrpc]
  address = '$ADDRESS.ttrpc'
[debug]
  address = '$SA_STATE/debug.sock'
[plugins]
  [plugins.'io.containerd.transfer.v1.local']
    config_path = '$HOSTSDIR'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '$HOSTSDIR'
EOF
	setsid nsenter --net="$NSPATH" -- containerd --config "$SA_STATE/config.toml" </dev/null >>"$OUT/containerd.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 1 100); do ctr --address "$ADDRESS" version >/dev/null 2>&1 && break; sleep 0.1; done
	ctr --address "$ADDRESS" version >/dev/null || { tail "$OUT/containerd.log" >&2; return 1; }
	say "standalone containerd up: $ADDRESS (pid $DAEMON_PID)"
}

# env_down: registry, containers, daemon/lab; safe to call twice.
env_down() {
	if [[ -n $REG_PID ]]; then
		kill "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
		REG_PID=""
	fi
	if [[ -n $DAEMON_STATE ]]; then
		reap_containers "$DAEMON_STATE"
	fi
	if [[ $STANDALONE == 1 ]]; then
		standalone_down
	elif [[ $LAB_UP == 1 ]]; then
		LAB_QUIET=1 "$ROOT/test/lab/lab.sh" down >&2 || say "warning: lab down failed"
		LAB_UP=0
	fi
}

UPSTREAMS="ghcr.io registry.k8s.io docker.io registry-1.docker.io index.docker.io cplatpublic.azurecr.io"
REG_HTTP=127.0.0.1:5000
{
	echo "127.0.0.1 localhost"
	echo "::1 localhost ip6-localhost ip6-loopback"
	for u in $UPSTREAMS; do echo "127.0.0.1 $u"; done
} >"$WORK/hosts"

# env_up: the daemon (sets NSPATH, ADDRESS, HOSTSDIR, INNS) and the registry.
env_up() {
	if [[ $STANDALONE == 1 ]]; then
		DAEMON_STATE=$SA_STATE
		reap_containers "$SA_STATE"
		standalone_down
		standalone_up
	else
		[[ -x $ROOT/test/lab/lab.sh ]] || { say "test/lab/lab.sh missing (use --standalone)"; return 1; }
		eval "$("$ROOT/test/lab/lab.sh" env a | sed "s/^export //")" # not exported to the tests
		DAEMON_STATE=$LAB_STATE
		# a fresh lab: nothing left from an earlier run
		reap_containers "$LAB_STATE"
		LAB_QUIET=1 "$ROOT/test/lab/lab.sh" down >&2 || true
		LAB_UP=1
		LAB_QUIET=1 "$ROOT/test/lab/lab.sh" up >&2
		NSPATH=$LAB_NETNS
		ADDRESS=$CONTAINERD_ADDRESS
		HOSTSDIR=$LAB_STATE/certs.d
		say "lab $LAB up: host a containerd $ADDRESS"
	fi
	INNS=(nsenter --net="$NSPATH" --)

	# The client tests pull with containerd's client-side resolver, which
	# ignores hosts.toml and goes to https://<upstream>:443. So the registry
	# listens on 127.0.0.1:443 inside the namespace with a certificate for
	# the upstream names, the test binary sees those names resolve to
	# 127.0.0.1 (/etc/hosts bind-mounted in its mount namespace) and trusts
	# the CA (SSL_CERT_FILE). Daemon-side pulls (transfer service, CRI) can
	# use hosts.toml mirrors to the registry's plain-HTTP port.
	local regargs
	mapfile -t regargs < <(tr ' ' '\n' <"$WORK/images/registry.args")
	rm -f "$WORK/registry.ready"
	"${INNS[@]}" ip link set lo up
	"${INNS[@]}" "$BIN/registry" -http "$REG_HTTP" -https 127.0.0.1:443 -tls-name "${UPSTREAMS// /,}" \
		-ca-out "$WORK/ca.pem" -ready "$WORK/registry.ready" -v "${regargs[@]}" >>"$OUT/registry.log" 2>&1 &
	REG_PID=$!
	for _ in $(seq 1 100); do [[ -s $WORK/registry.ready ]] && break; kill -0 "$REG_PID" 2>/dev/null || break; sleep 0.1; done
	[[ -s $WORK/registry.ready ]] || { tail "$OUT/registry.log" >&2; say "registry did not start"; return 1; }
	local u
	for u in $UPSTREAMS; do
		mkdir -p "$HOSTSDIR/$u"
		cat >"$HOSTSDIR/$u/hosts.toml" <<EOF
# generated by test/integration/run.sh: serve $u from the local test registry
server = "https://$u"
[host."http://$REG_HTTP"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
EOF
	done
	say "registry up (pid $REG_PID): $(tr '\n' ' ' <"$WORK/registry.ready")"

	# Smoke check of the daemon-side path: the transfer service pulls
	# through the hosts.toml mirror (plain HTTP) from inside the namespace.
	local smoke=(ctr --address "$ADDRESS" --namespace rrcit-smoke)
	if ! "${smoke[@]}" image pull --hosts-dir "$HOSTSDIR" ghcr.io/containerd/busybox:1.36 >"$WORK/smoke.log" 2>&1; then
		cat "$WORK/smoke.log" >&2
		say "daemon-side pull through $HOSTSDIR failed"
		return 1
	fi
	"${smoke[@]}" image rm --sync ghcr.io/containerd/busybox:1.36 >/dev/null
	ctr --address "$ADDRESS" namespace rm rrcit-smoke >/dev/null 2>&1 || true
	say "daemon-side pull through hosts.toml ($HOSTSDIR) works"
}

reap_containers "$TESTD_STATE"

# --- tests ---------------------------------------------------------------------
anchored() { awk '!/^#/ && NF {print "^" $1 "$"}' "$@" | paste -sd'|' -; }
# Pass 1 (against the lab daemon, -no-daemon) skips skip.txt and the tests of
# daemon-tests.txt; pass 2 runs the latter with a daemon of TestMain's own.
SKIPRE=$(anchored "$HERE/skip.txt" "$HERE/daemon-tests.txt")
[[ -n $SKIP ]] && SKIPRE="${SKIPRE:+$SKIPRE|}$SKIP"
OWN=()
while read -r name; do
	[[ -n $RUN && ! $name =~ $RUN ]] && continue
	[[ -n $SKIP && $name =~ $SKIP ]] && continue
	grep -qx "$name" <(awk '!/^#/ && NF {print $1}' "$HERE/skip.txt") && continue
	OWN+=("$name")
done < <(awk '!/^#/ && NF {print $1}' "$HERE/daemon-tests.txt")
OWNRE=$(printf '^%s$|' "${OWN[@]}")
OWNRE=${OWNRE%|}
COMMON=(-test.v=test2json -test.count=1 -test.timeout=20m -test.root "${CRIU_ARGS[@]}")
PASS1=("${COMMON[@]}" -test.parallel=4 -no-daemon)
[[ -n $RUN ]] && PASS1+=(-test.run "$RUN")
[[ -n $SKIPRE ]] && PASS1+=(-test.skip "$SKIPRE")
PASS2=("${COMMON[@]}" -test.run "$OWNRE")

# run_tests RT NAME ARGS...: run the test binary; output in $OUT/RT.NAME.raw.
# In the background, so that an interrupt reaches the trap at once.
run_tests() {
	local rt=$1 name=$2 rc
	shift 2
	(cd "$PKGDIR" && exec "${INNS[@]}" unshare -m --propagation private -- \
		sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$WORK/hosts" \
		env SSL_CERT_FILE="$WORK/ca.pem" TMPDIR="$WORK/tmp" TEST_RUNTIME="$rt" "$BIN/client.test" "$@") \
		>"$OUT/$rt.$name.raw" 2>&1 &
	TEST_PID=$!
	wait "$TEST_PID" && rc=0 || rc=$?
	TEST_PID=""
	return $rc
}

status=0
for rt in "${RUNTIMES[@]}"; do
	env_up
	t0=$SECONDS
	say "$rt: pass 1, against $ADDRESS ${CRIU_ARGS[*]}"
	run_tests "$rt" lab "${PASS1[@]}" -address "$ADDRESS" && rc=0 || rc=$?
	say "$rt: pass 1: test binary exit $rc after $((SECONDS - t0)) s"
	go tool test2json -t -p "$PKG" <"$OUT/$rt.lab.raw" >"$OUT/$rt.json"
	if [[ ${#OWN[@]} -gt 0 ]]; then
		t1=$SECONDS
		say "$rt: pass 2, ${#OWN[@]} tests with TestMain's own daemon"
		PASS2_STARTED=1
		run_tests "$rt" own "${PASS2[@]}" && rc=0 || rc=$?
		kill_arg "$TESTD_STATE/containerd.sock"
		reap_containers "$TESTD_STATE"
		rm -rf "$TESTD_STATE" "$TESTD_ROOT" 2>/dev/null || true
		say "$rt: pass 2: test binary exit $rc after $((SECONDS - t1)) s"
		go tool test2json -t -p "$PKG" <"$OUT/$rt.own.raw" >>"$OUT/$rt.json"
	fi
	echo "$((SECONDS - t0))" >"$OUT/$rt.seconds"
	env_down
done

# --- compare -------------------------------------------------------------------
REPORT=("$BIN/report" -log-dir "$OUT" -md "$OUT/summary.md")
[[ $EXPECT == 1 ]] && REPORT+=(-expect "$HERE/known-failures.txt")
[[ $CI_ON == 1 ]] && REPORT+=(-no-skips)
if [[ " ${RUNTIMES[*]} " == *" io.containerd.runc.v2 "* && " ${RUNTIMES[*]} " == *" io.rrc.v1 "* ]]; then
	REPORT+=(-baseline "$OUT/io.containerd.runc.v2.json")
fi
for rt in "${RUNTIMES[@]}"; do REPORT+=("$OUT/$rt.json"); done
"${REPORT[@]}" || status=1
say "done in $((SECONDS - t_start)) s; results in $OUT"
exit "$status"
}
