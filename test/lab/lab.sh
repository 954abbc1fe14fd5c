#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# The lab: hosts a, b and client on one machine, each a network namespace,
# joined by a bridge (the "LAN") that lives in its own namespace. Hosts a and b
# each run their own containerd. See docs/LAB.md.
#
#   lab.sh up | down | status
#   lab.sh crash HOST | restart HOST | restart-containerd HOST
#   lab.sh partition X Y [oneway] | isolate X | heal | witness-endpoints | registry
#   lab.sh ctr HOST ARGS... | exec HOST CMD... | env HOST | ip HOST
#
# Environment: LAB (name prefix, default rrc), LAB_SUBNET (first three octets,
# default 10.77.0), LAB_IMAGES (image cache dir, default /var/cache/rrc-lab-images),
# LAB_QUIET=1 (no progress lines), LAB_DEBUG=1 (containerd debug log level),
# LAB_CONTAINERD_CONFIG (a TOML file appended to each host's containerd
# config; @LAB@ @HOST@ @ROOT@ @STATE@ @NAMESPACE@ are substituted),
# LAB_SHIM_CONFIG (the io.rrc.v1 shim configuration file of each host's
# containerd, passed as RRC_SHIM_CONFIG; @HOST@ is substituted, e.g.
# /tmp/x/@HOST@.toml), LAB_SHIM_PATH (a directory put first on each host's
# containerd PATH, e.g. a freshly built containerd-shim-rrc-v1), LAB_CRI=1
# (containerd's CRI plugins enabled, see cri_config),
# LAB_CONTAINERD (the containerd binary the hosts run, default containerd on
# PATH; its directory goes on containerd's PATH after LAB_SHIM_PATH, so that
# its release's containerd-shim-runc-v2 is the one found), LAB_WITNESS=1 (at
# up: host w and a three-member etcd on a, b and w, see witness.sh), LAB_REGISTRY=1 (at
# up: an OCI registry with TLS on the client host, holding the lab's images, trusted by a's
# and b's containerd, see registry.sh).
set -euo pipefail

LAB=${LAB:-rrc}
SUB=${LAB_SUBNET:-10.77.0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# One cache for every lab: the images do not depend on the lab.
IMAGES=${LAB_IMAGES:-/var/cache/rrc-lab-images}
LIBDIR=/var/lib/$LAB
RUNDIR=/run/$LAB
LAN=$LAB-lan
HOSTS="a b client"
DAEMONS="a b"
# w, the witness host, exists only with LAB_WITNESS=1; down and crash know it
# always.
ALL_HOSTS="a b client w"
PREFIX=24
IMAGE_REFS="rrc.local/busybox:latest rrc.local/redis:latest rrc.local/threadkv:latest"
IMAGE_FILES="busybox.tar redis.tar threadkv.tar lighttpd.tar memcached.tar nondet.tar"
# LAB_CRI=1: these also go into CRI's containerd namespace.
CRI_NAMESPACE=k8s.io
CRI_IMAGE_FILES="pause.tar busybox.tar redis.tar"

# ctr prints a cgroup v1 deprecation warning on every call otherwise.
export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=${CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS:-1}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

if ! [[ $LAB =~ ^[a-z][a-z0-9_-]{0,11}$ ]]; then
	echo "lab: LAB must be 1-12 of [a-z0-9_-], starting with a letter (got '$LAB')" >&2
	exit 2
fi
if ! [[ $SUB =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]]; then
	echo "lab: LAB_SUBNET must be three octets like 10.77.0 (got '$SUB')" >&2
	exit 2
fi

say() { [[ ${LAB_QUIET:-} == 1 ]] || echo "lab[$LAB]: $*" >&2; }
die() { echo "lab[$LAB]: error: $*" >&2; exit 1; }

host_octet() {
	case $1 in
	a) echo 1 ;; b) echo 2 ;; w) echo 3 ;; client) echo 100 ;;
	*) die "unknown host '$1' (hosts: $HOSTS)" ;;
	esac
}
host_ip() { echo "$SUB.$(host_octet "$1")"; }
netns() { echo "$LAB-$1"; }
nspath() { echo "/run/netns/$LAB-$1"; }
cns() { echo "$LAB-$1"; } # containerd namespace of a host
state() { echo "$RUNDIR/$1"; }
root() { echo "$LIBDIR/$1"; }
sock() { echo "$RUNDIR/$1/containerd.sock"; }
is_daemon() { [[ " $DAEMONS " == *" $1 "* ]]; }
check_host() { host_octet "$1" >/dev/null; }
# MAC from the IP: 02:00:<ip octets> (host side), 06:00:<ip octets> (LAN side).
mac() {
	local p=$1 ip
	ip=$(host_ip "$2")
	# shellcheck disable=SC2046
	printf '%s:00:%02x:%02x:%02x:%02x' "$p" $(echo "$ip" | tr . ' ')
}

# ns_exists H: the netns file is there and is a mount of a namespace.
ns_exists() { grep -qF " $(nspath "$1") " /proc/self/mountinfo; }
in_ns() { local h=$1; shift; nsenter --net="$(nspath "$h")" -- "$@"; }

need_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }

# --- network -----------------------------------------------------------------

ns_sysctls() {
	# No IPv6 (no RS/MLD/DAD noise on the LAN), quiet ARP behaviour.
	nsenter --net="/run/netns/$1" -- sh -c '
		for k in net.ipv6.conf.all.disable_ipv6 net.ipv6.conf.default.disable_ipv6; do
			sysctl -qw $k=1 2>/dev/null || true
		done' || true
}

# add_netns NS: ip netns add NS with a TCP hash table of its own, as
# servicenet makes the replicated container's namespace (runtime/servicenet/
# netns.go: the host's table of 262,144 buckets would be walked by every
# listing of the namespace's sockets, e.g. CRIU's at each checkpoint).
# ip runs in a throwaway namespace whose net.ipv4.tcp_child_ehash_entries
# sizes the table; the root namespace's setting is left alone. Kernels before
# 6.1 have no such setting: the namespace shares the host's table.
add_netns() {
	unshare --net -- sh -c 'sysctl -qw net.ipv4.tcp_child_ehash_entries=4096 2>/dev/null; exec ip netns add "$1"' sh "$1"
}

ensure_lan() {
	if ! ns_exists lan; then
		ip netns delete "$LAN" 2>/dev/null || true
		rm -f "/run/netns/$LAN"
		say "netns $LAN (bridge br0)"
		add_netns "$LAN"
	fi
	ns_sysctls "$LAN"
	ip -n "$LAN" link set lo up
	if ! ip -n "$LAN" link show br0 >/dev/null 2>&1; then
		ip -n "$LAN" link add br0 type bridge stp_state 0 forward_delay 0
	fi
	ip -n "$LAN" link set br0 up
}

# ensure_host_net H: the host's netns with lo up, and a link eth0 <-> LAN port H.
ensure_host_net() {
	local h=$1 ns ip
	ns=$(netns "$h")
	ip=$(host_ip "$h")
	if ! ns_exists "$h"; then
		ip netns delete "$ns" 2>/dev/null || true
		rm -f "$(nspath "$h")"
		say "netns $ns"
		add_netns "$ns"
	fi
	ns_sysctls "$ns"
	ip -n "$ns" link set lo up
	if is_daemon "$h"; then
		in_ns "$h" sysctl -qw net.ipv4.ip_forward=1 || true
	fi
	if ! ip -n "$LAN" link show dev "$h" >/dev/null 2>&1; then
		# A stale eth0 (peer gone) cannot exist: deleting one end of a
		# veth pair deletes both. Create the pair inside the namespaces
		# so the root namespace never sees it.
		ip -n "$ns" link del eth0 2>/dev/null || true
		say "link $ns:eth0 <-> $LAN:$h ($ip/$PREFIX)"
		ip -n "$LAN" link add name "$h" address "$(mac 06 "$h")" type veth peer name eth0 netns "$ns"
		ip -n "$ns" link set eth0 address "$(mac 02 "$h")"
	fi
	ip -n "$LAN" link set dev "$h" master br0 up
	ip -n "$ns" addr replace "$ip/$PREFIX" dev eth0
	ip -n "$ns" link set eth0 up
}

# --- containerd --------------------------------------------------------------

write_config() {
	local h=$1 st rt
	st=$(state "$h")
	rt=$(root "$h")
	mkdir -p "$st" "$rt"
	cat >"$st/config.toml" <<EOF
# Generated by test/lab/lab.sh for lab $LAB host $h. Do not edit.
version = 3
root = '$rt'
state = '$st'
temp = '$rt/tmp'
imports = []
oom_score = 0
disabled_plugins = [
$(cri_plugins_disabled)
  'io.containerd.nri.v1.nri',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs',
  'io.containerd.differ.v1.erofs',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
  'io.containerd.grpc.v1.cri-image',
]

[grpc]
  address = '$st/containerd.sock'

[ttrpc]
  address = '$st/containerd.sock.ttrpc'

[debug]
  address = '$st/debug.sock'
  level = '${LAB_DEBUG:+debug}'

[metrics]
  address = ''

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '$rt/opt'
EOF
	[[ ${LAB_CRI:-} != 1 ]] || cri_config "$h" >>"$st/config.toml"
	! registry_on || registry_config "$h" >>"$st/config.toml"
	if [[ -n ${LAB_CONTAINERD_CONFIG:-} ]]; then
		[[ -r $LAB_CONTAINERD_CONFIG ]] || die "LAB_CONTAINERD_CONFIG=$LAB_CONTAINERD_CONFIG is not readable"
		{
			echo
			echo "# From $LAB_CONTAINERD_CONFIG"
			sed -e "s|@LAB@|$LAB|g" -e "s|@HOST@|$h|g" -e "s|@ROOT@|$rt|g" \
				-e "s|@STATE@|$st|g" -e "s|@NAMESPACE@|$(cns "$h")|g" "$LAB_CONTAINERD_CONFIG"
		} >>"$st/config.toml"
	fi
}

# cri_plugins_disabled: the CRI plugins are off unless LAB_CRI=1.
cri_plugins_disabled() {
	[[ ${LAB_CRI:-} == 1 ]] && return 0
	printf "  '%s',\n" io.containerd.grpc.v1.cri io.containerd.cri.v1.images \
		io.containerd.cri.v1.runtime io.containerd.podsandbox.controller.v1.podsandbox
}

# cri_config H: LAB_CRI=1's settings of H's CRI plugins. Their own state and
# root are under containerd's (the host's dirs); the pod network namespaces
# go under the state too (not /run/netns), so crash and down find them; CNI
# configurations are read from the host's disk, $ROOT/cni/net.d (not
# /etc/cni/net.d); the sandbox image is the lab's rrc.local/pause. CRI
# gives the sandbox an oom_score_adj of -998, which a process may set only
# with CAP_SYS_RESOURCE (runc init fails without it, as in this machine's
# sandbox): restrict_oom_score_adj keeps it at containerd's own.
cri_config() {
	cat <<EOF

# LAB_CRI=1
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/opt/cni/bin']
    conf_dir = '$(root "$1")/cni/net.d'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'rrc.local/pause:latest'
EOF
}

# ctr_h H ARGS: ctr against H's daemon. The stdio FIFOs of the commands that
# make them go to H's state dir rather than the machine-wide
# /run/containerd/fifo, where ctr leaves those of detached tasks behind.
ctr_h() {
	local h=$1 fifo
	shift
	fifo="$(state "$h")/fifo"
	case "$1 ${2:-}" in
	"run "* | "t start" | "t exec" | "task start" | "task exec" | "tasks start" | "tasks exec")
		mkdir -p "$fifo"
		if [[ $1 == run ]]; then
			set -- "$1" --fifo-dir "$fifo" "${@:2}"
		else
			set -- "$1" "$2" --fifo-dir "$fifo" "${@:3}"
		fi
		;;
	esac
	ctr --address "$(sock "$h")" --namespace "$(cns "$h")" "$@"
}

daemon_up() { ctr --address "$(sock "$1")" version >/dev/null 2>&1; }

start_containerd() {
	local h=$1 st pid
	st=$(state "$h")
	if daemon_up "$h"; then
		return 0
	fi
	if [[ -s $st/containerd.pid ]]; then
		pid=$(cat "$st/containerd.pid")
		if [[ -d /proc/$pid ]] && grep -qF "$st/config.toml" "/proc/$pid/cmdline" 2>/dev/null; then
			say "containerd of $h (pid $pid) does not answer: killing it"
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	write_config "$h"
	mkdir -p "$(root "$h")/tmp"
	# The shims inherit containerd's environment: their configuration
	# file and, for a development build, the PATH they are found on.
	local extra=()
	[[ -z ${LAB_SHIM_CONFIG:-} ]] || extra+=("RRC_SHIM_CONFIG=${LAB_SHIM_CONFIG//@HOST@/$h}")
	local path=$PATH
	[[ -z ${LAB_CONTAINERD:-} ]] || path=$(dirname "$LAB_CONTAINERD"):$path
	[[ -z ${LAB_SHIM_PATH:-} ]] || path=$LAB_SHIM_PATH:$path
	[[ $path == "$PATH" ]] || extra+=("PATH=$path")
	launch_containerd "$h" start env "${extra[@]}"
}

# launch_containerd H WHAT ENV-CMD...: runs containerd of H with its
# config.toml under ENV-CMD (env with the variables it gets) and waits until
# it answers; WHAT names the start in its log.
launch_containerd() {
	local h=$1 what=$2 st log pid i
	shift 2
	st=$(state "$h")
	log=$st/containerd.log
	say "containerd $h: $(sock "$h") (log $log)"
	# setsid: own session, so that a test harness killing its process
	# group does not take the daemon with it; nsenter --net only (not
	# ip netns exec, which makes a mount namespace and remounts /sys,
	# hiding /sys/fs/cgroup).
	echo "--- $(date -u +%FT%T.%NZ) lab.sh: $what containerd" >>"$log"
	# 9>&-: the daemon must not inherit the lab lock.
	setsid "$@" nsenter --net="$(nspath "$h")" -- "${LAB_CONTAINERD:-containerd}" --config "$st/config.toml" \
		</dev/null >>"$log" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$st/containerd.pid"
	for i in $(seq 1 200); do
		if daemon_up "$h"; then
			say "containerd $h: up (pid $pid)"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -20 "$log" >&2 || true
			die "containerd of $h exited; see $log"
		fi
		sleep 0.1
	done
	tail -20 "$log" >&2 || true
	die "containerd of $h does not answer after 20 s; see $log"
}

# containerd_pid H: the pid of H's running containerd (from containerd.pid,
# checked against its --config), "" if none runs.
containerd_pid() {
	local st pid line
	st=$(state "$1")
	[[ -s $st/containerd.pid ]] || return 0
	pid=$(cat "$st/containerd.pid")
	read -r line 2>/dev/null <"/proc/$pid/stat" || return 0
	# A zombie has exited (its reaper may be slow).
	line=${line##*) }
	[[ ${line:0:1} == Z ]] && return 0
	grep -qF "$st/config.toml" "/proc/$pid/cmdline" 2>/dev/null || return 0
	echo "$pid"
}

# stop_containerd H: SIGTERM to H's containerd only, and wait until it has
# exited. Its shims, containers and network namespace are left alone:
# containerd does not stop its shims when it stops.
stop_containerd() {
	local h=$1 pid i
	pid=$(containerd_pid "$h")
	[[ -n $pid ]] || die "containerd of $h does not run (no live pid in $(state "$h")/containerd.pid)"
	say "containerd $h: SIGTERM to pid $pid"
	echo "--- $(date -u +%FT%T.%NZ) lab.sh: stop containerd (SIGTERM to $pid)" >>"$(state "$h")/containerd.log"
	kill -TERM "$pid"
	for i in $(seq 1 300); do
		if [[ -z $(containerd_pid "$h") ]]; then
			say "containerd $h: pid $pid exited"
			return 0
		fi
		sleep 0.1
	done
	die "containerd of $h (pid $pid) still runs 30 s after SIGTERM"
}

build_images() {
	mkdir -p "$IMAGES"
	LAB_QUIET=${LAB_QUIET:-} "$REPO/contrib/imagebuild/images.sh" "$IMAGES" >&2
}

import_images() {
	local h=$1 f ref have want
	for f in $IMAGE_FILES; do
		# Skip when the image is there with the same manifest digest.
		want=$(grep -o '"digest":"sha256:[0-9a-f]*"' <(tar -xOf "$IMAGES/$f" index.json) | head -1 | cut -d'"' -f4)
		ref=$(grep -o '"io.containerd.image.name":"[^"]*"' <(tar -xOf "$IMAGES/$f" index.json) | head -1 | cut -d'"' -f4)
		have=$(ctr_h "$h" images ls "name==$ref" 2>/dev/null | awk -v r="$ref" '$1==r {print $3}')
		if [[ -n $want && $have == "$want" ]]; then
			continue
		fi
		say "import $ref into $h"
		ctr_h "$h" images import --platform linux/amd64 "$IMAGES/$f" >/dev/null
	done
	[[ ${LAB_CRI:-} != 1 ]] || import_cri_images "$h"
}

# import_cri_images H: LAB_CRI=1: the images CRI uses, in its containerd
# namespace; CRI's image service sees an image imported there.
import_cri_images() {
	local h=$1 f
	for f in $CRI_IMAGE_FILES; do
		ctr --address "$(sock "$h")" --namespace "$CRI_NAMESPACE" images import --platform linux/amd64 "$IMAGES/$f" >/dev/null
	done
}

# --- processes, mounts, cgroups ----------------------------------------------

# pids_of H: every process of host H: in its netns, the containerd of its
# state dir, shims talking to that containerd, processes in the cgroups of its
# containerd namespace, and all their descendants. Excludes this script and
# its ancestors. Bash builtins only (no fork per process).
pids_of() {
	local h=$1 st nsp cg anc p d pid line match arg seeds="" rest
	local -a args f
	local -A parent=()
	st=$(state "$h")
	nsp=$(nspath "$h")
	[[ -e $nsp ]] || nsp=""
	cg=":/$(cns "$h")/"
	anc=" "
	p=$$
	while [[ -n $p && $p != 0 && $p != 1 ]]; do
		anc+="$p "
		read -r line 2>/dev/null <"/proc/$p/stat" || break
		rest=${line##*) }
		read -r -a f <<<"$rest"
		p=${f[1]}
	done
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ $anc == *" $pid "* ]] && continue
		# comm may contain spaces: take the fields after the last ')'
		read -r line 2>/dev/null <"$d/stat" || continue
		rest=${line##*) }
		read -r -a f <<<"$rest"
		[[ ${f[0]} == Z ]] && continue
		parent[$pid]=${f[1]}
		match=0
		if [[ -n $nsp && $d/ns/net -ef $nsp ]]; then
			match=1
		fi
		if [[ $match == 0 ]]; then
			args=()
			mapfile -d '' -t args 2>/dev/null <"$d/cmdline" || true
			local i n=${#args[@]}
			for ((i = 0; i + 1 < n; i++)); do
				arg=${args[i]}
				if [[ ($arg == --config || $arg == -c) && ${args[i + 1]} == "$st/config.toml" ]] ||
					[[ ($arg == -address || $arg == --address) && ${args[i + 1]} == "$st/containerd.sock" ]]; then
					match=1
					break
				fi
			done
		fi
		if [[ $match == 0 ]]; then
			while read -r line; do
				if [[ $line == *"$cg"* ]]; then
					match=1
					break
				fi
			done 2>/dev/null <"$d/cgroup" || true
		fi
		[[ $match == 1 ]] && seeds+="$pid "
	done
	# add descendants
	local changed=1 set=" $seeds"
	while [[ $changed == 1 ]]; do
		changed=0
		for pid in "${!parent[@]}"; do
			[[ $set == *" $pid "* ]] && continue
			if [[ $set == *" ${parent[$pid]} "* ]]; then
				set+="$pid "
				changed=1
			fi
		done
	done
	echo $set
}

# cgroup_dirs H: the cgroup directories of H's containerd namespace in every
# v1 hierarchy and in v2.
cgroup_dirs() {
	local name mp
	name=$(cns "$1")
	awk '$0 ~ / - cgroup2? / {print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do
		[[ -d $mp/$name ]] && echo "$mp/$name"
	done
	return 0
}

thaw_cgroups() {
	local d f
	for d in $(cgroup_dirs "$1"); do
		while read -r f; do
			case $f in
			*/freezer.state) echo THAWED >"$f" 2>/dev/null || true ;;
			*/cgroup.freeze) echo 0 >"$f" 2>/dev/null || true ;;
			esac
		done < <(find "$d" \( -name freezer.state -o -name cgroup.freeze \) 2>/dev/null)
	done
}

kill_host() {
	local h=$1 i pids
	for i in $(seq 1 50); do
		pids=$(pids_of "$h")
		if [[ -z ${pids// /} ]]; then
			return 0
		fi
		[[ $i == 1 ]] && say "kill $h: $(echo $pids | wc -w) processes"
		kill -9 $pids 2>/dev/null || true
		# SIGKILL is not acted on by frozen tasks: thaw them.
		thaw_cgroups "$h"
		sleep 0.1
	done
	die "processes of $h survive SIGKILL: $(pids_of "$h")"
}

remove_cgroups() {
	local d i left
	for d in $(cgroup_dirs "$1"); do
		for i in $(seq 1 30); do
			find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
			[[ -d $d ]] || break
			sleep 0.1
		done
		if [[ -d $d ]]; then
			left=$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' ')
			say "warning: cannot remove cgroup $d (procs: $left)"
		fi
	done
}

# unmount_under DIR...: lazily unmount every mount point under the dirs,
# deepest first (the rootfs of containers, snapshot mounts, netns binds).
unmount_under() {
	local d mp
	for d in "$@"; do
		# mountinfo field 5 is the mount point, octal-escaped.
		awk -v d="$d" '{ if ($5 == d || index($5, d "/") == 1) print $5 }' /proc/self/mountinfo |
			awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- | while read -r mp; do
			mp=$(printf '%b' "$mp")
			umount -l "$mp" 2>/dev/null || umount -l -f "$mp" 2>/dev/null || true
		done
	done
}

# Runtime state the runc v2 shim keeps outside containerd's state dir:
# runc's root (/run/containerd/runc/<namespace>) and the shim sockets
# (/run/containerd/s/sha256(<address>/<namespace>/<id>)).
remove_shim_leftovers() {
	local h=$1 st f ns id s
	st=$(state "$h")
	# Every containerd namespace the host's daemon used (tests make their own).
	for f in "$st"/io.containerd.runtime.v2.task/*/*; do
		[[ -d $f ]] || continue
		id=${f##*/}
		ns=${f%/*}
		ns=${ns##*/}
		for s in "$st/containerd.sock/$ns/$id" "$st/containerd.sock/$ns/$id/debug"; do
			rm -f "/run/containerd/s/$(printf '%s' "$s" | sha256sum | cut -d' ' -f1)"
		done
		# CNI's result cache of a pod sandbox (libcni's, always under
		# /var/lib/cni): NETWORK-<sandbox id>-IFNAME.
		rm -f /var/lib/cni/results/*-"$id"-*
		# A runc restore killed half-way (a backup promoting when its host
		# crashes) leaves its bind mount of the rootfs at <id>/criu-root.
		unmount_under "/run/containerd/runc/$ns/$id"
		rm -rf "/run/containerd/runc/$ns/$id"
		rmdir "/run/containerd/runc/$ns" 2>/dev/null || true
	done
	unmount_under "/run/containerd/runc/$(cns "$h")"
	rm -rf "/run/containerd/runc/$(cns "$h")"
}

# remove_empty_runc_namespaces: the runc shim makes a directory per
# containerd namespace under runc's root and never removes it; an empty one
# holds no state, whoever made it.
remove_empty_runc_namespaces() {
	local d
	for d in /run/containerd/runc/*/; do
		rmdir "$d" 2>/dev/null || true
	done
	return 0
}

# wipe_volatile H [keep-logs]: what a host loses when it goes down:
# processes, mounts, cgroups, its /run state (but its *.log files with
# keep-logs) and its network namespace. Its disk (root dir) stays.
wipe_volatile() {
	local h=$1 keep=${2:-} f
	kill_host "$h"
	unmount_under "$(state "$h")" "$(root "$h")"
	remove_cgroups "$h"
	if is_daemon "$h"; then
		remove_shim_leftovers "$h"
	fi
	if [[ -e $(nspath "$h") ]] || ip netns list | grep -qw "^$(netns "$h")"; then
		say "delete netns $(netns "$h")"
		ip netns delete "$(netns "$h")" 2>/dev/null || { umount -l "$(nspath "$h")" 2>/dev/null; rm -f "$(nspath "$h")"; }
	fi
	if [[ $keep == keep-logs && -d $(state "$h") ]]; then
		find "$(state "$h")" -mindepth 1 -maxdepth 1 ! -name '*.log' -exec rm -rf {} +
		for f in "$(state "$h")"/*.log; do
			[[ -e $f ]] && echo "--- $(date -u +%FT%T.%NZ) lab.sh: host $h crashed" >>"$f"
		done
	else
		rm -rf "$(state "$h")"
	fi
	return 0
}

# --- commands ----------------------------------------------------------------

cmd_up() {
	need_root
	local t0=$SECONDS h
	for b in containerd ctr nsenter ip; do
		command -v "$b" >/dev/null || die "$b not found in PATH"
	done
	mkdir -p "$LIBDIR" "$RUNDIR"
	build_images
	ensure_lan
	for h in $HOSTS; do
		ensure_host_net "$h"
	done
	# A lab that has its registry keeps it on every up, LAB_REGISTRY=1 or not.
	if [[ ${LAB_REGISTRY:-} == 1 ]] || registry_on; then
		registry_up
	fi
	for h in $DAEMONS; do
		start_containerd "$h"
	done
	for h in $DAEMONS; do
		import_images "$h"
	done
	if registry_on; then
		push_images
	fi
	if [[ ${LAB_WITNESS:-} == 1 ]]; then
		witness_up
	fi
	say "up ($((SECONDS - t0)) s): a=$(host_ip a) b=$(host_ip b) client=$(host_ip client)"
}

cmd_crash() {
	need_root
	local h=$1 l
	check_host "$h"
	# 1. Cut the links first, so that nothing the dying processes or the
	#    kernel send (FIN, RST, ARP) reaches anyone: deleting the LAN-side
	#    veth deletes the pair. Interfaces in the LAN namespace named H or
	#    H-* / H.* count as the host's links.
	if ns_exists lan; then
		for l in $(ip -n "$LAN" -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
			if [[ $l == "$h" || $l == "$h-"* || $l == "$h."* ]]; then
				say "crash $h: cut link $LAN:$l"
				ip -n "$LAN" link set dev "$l" down 2>/dev/null || true
				ip -n "$LAN" link del dev "$l" 2>/dev/null || true
			fi
		done
	fi
	if ns_exists "$h"; then
		ip -n "$(netns "$h")" link set eth0 down 2>/dev/null || true
	fi
	# 2. Then kill every process of the host, and drop what a reboot loses
	#    (the logs are kept for post-mortems).
	wipe_volatile "$h" keep-logs
	say "crash $h: done"
}

cmd_restart() {
	need_root
	local h=$1
	check_host "$h"
	ns_exists lan || die "lab $LAB is not up"
	ensure_host_net "$h"
	if is_daemon "$h"; then
		start_containerd "$h"
		import_images "$h"
	fi
	if witness_on && [[ " $WITNESS_MEMBERS " == *" $h "* ]]; then
		start_etcd "$h"
	fi
	if registry_on && [[ $h == client ]]; then
		start_registry
	fi
	say "restart $h: done"
}

# cmd_restart_containerd H: stops H's containerd gracefully and starts it
# again with the same config file and the same environment (so its shims'
# RRC_SHIM_CONFIG and PATH stay as they were); the shims, containers and
# the netns are not touched, and containerd reconnects to the shims.
cmd_restart_containerd() {
	need_root
	local h=$1 pid envs=()
	check_host "$h"
	is_daemon "$h" || die "$h runs no containerd"
	ns_exists "$h" || die "host $h is down (no netns $(netns "$h"))"
	[[ -s $(state "$h")/config.toml ]] || die "no containerd config of $h: is lab $LAB up?"
	pid=$(containerd_pid "$h")
	[[ -n $pid ]] || die "containerd of $h does not run"
	mapfile -d '' -t envs <"/proc/$pid/environ"
	stop_containerd "$h"
	launch_containerd "$h" restart env -i "${envs[@]}"
	say "restart-containerd $h: done"
}

cmd_down() {
	need_root
	local t0=$SECONDS h
	# Cut the whole LAN first (same reason as crash).
	if [[ -e /run/netns/$LAN ]] || ip netns list | grep -qw "^$LAN"; then
		say "delete netns $LAN"
		ip netns delete "$LAN" 2>/dev/null || { umount -l "/run/netns/$LAN" 2>/dev/null; rm -f "/run/netns/$LAN"; }
	fi
	for h in $ALL_HOSTS; do
		wipe_volatile "$h"
	done
	unmount_under "$LIBDIR" "$RUNDIR"
	rm -rf "$LIBDIR" "$RUNDIR"
	remove_empty_runc_namespaces
	say "down ($((SECONDS - t0)) s)"
}

cmd_status() {
	local h pids
	if ns_exists lan; then echo "lan    $LAN: up"; else echo "lan    $LAN: absent"; fi
	for h in $HOSTS $(witness_on && echo w); do
		if ! ns_exists "$h"; then
			printf '%-6s %-15s netns absent\n' "$h" "$(host_ip "$h")"
			continue
		fi
		local link
		link=$(ip -n "$LAN" -o link show dev "$h" 2>/dev/null | grep -o 'state [A-Z]*' || echo "link cut")
		pids=$(pids_of "$h")
		printf '%-6s %-15s netns %s, %s, %d processes' "$h" "$(host_ip "$h")" "$(netns "$h")" "$link" "$(echo $pids | wc -w)"
		if is_daemon "$h"; then
			if daemon_up "$h"; then
				printf ', containerd up (%s), %s tasks' "$(sock "$h")" "$(ctr_h "$h" tasks ls -q 2>/dev/null | wc -l)"
			else
				printf ', containerd DOWN'
			fi
		fi
		echo
	done
	if registry_on; then
		if [[ -n $(registry_pid) ]]; then
			echo "registry https://$(registry_addr): up, hosts dirs $(hosts_dir a) $(hosts_dir b)"
		else
			echo "registry https://$(registry_addr): DOWN"
		fi
	fi
}

cmd_env() {
	local h=$1
	check_host "$h"
	echo "export LAB=$LAB LAB_SUBNET=$SUB"
	echo "export LAB_HOST=$h LAB_HOST_IP=$(host_ip "$h") LAB_NETNS=$(nspath "$h")"
	if is_daemon "$h"; then
		echo "export CONTAINERD_ADDRESS=$(sock "$h") CONTAINERD_NAMESPACE=$(cns "$h")"
		echo "export LAB_ROOT=$(root "$h") LAB_STATE=$(state "$h")"
		! registry_on || echo "export LAB_REGISTRY_ADDR=$(registry_addr) LAB_HOSTS_DIR=$(hosts_dir "$h")"
	fi
}

usage() {
	sed -n '5,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# lock: one mutating lab.sh at a time per lab.
lock() {
	exec 9>"/run/lock/lab-$LAB.lock"
	flock -w 300 9 || die "another lab.sh holds /run/lock/lab-$LAB.lock"
}

main() {
	[[ $# -ge 1 ]] || usage
	local c=$1
	shift
	case $c in up | down | crash | restart | restart-containerd | partition | isolate | heal) need_root; mkdir -p /run/lock; lock ;; esac
	case $c in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	crash) [[ $# == 1 ]] || usage; cmd_crash "$1" ;;
	restart) [[ $# == 1 ]] || usage; cmd_restart "$1" ;;
	restart-containerd) [[ $# == 1 ]] || usage; cmd_restart_containerd "$1" ;;
	partition) [[ $# == 2 || $# == 3 ]] || usage; cmd_partition "$@" ;;
	isolate) [[ $# == 1 ]] || usage; cmd_isolate "$1" ;;
	heal) cmd_heal ;;
	witness-endpoints) witness_on || die "lab $LAB has no witness (LAB_WITNESS=1 at up)"; witness_endpoints ;;
	registry) registry_on || die "lab $LAB has no registry (LAB_REGISTRY=1 at up)"; registry_addr ;;
	env) [[ $# == 1 ]] || usage; cmd_env "$1" ;;
	ip) [[ $# == 1 ]] || usage; host_ip "$1" ;;
	ctr)
		[[ $# -ge 1 ]] || usage
		local h=$1; shift
		check_host "$h"; is_daemon "$h" || die "$h runs no containerd"
		ctr_h "$h" "$@"
		;;
	exec)
		[[ $# -ge 2 ]] || usage
		local h=$1; shift
		check_host "$h"
		[[ -e $(nspath "$h") ]] || die "host $h is down (no netns $(netns "$h"))"
		exec nsenter --net="$(nspath "$h")" -- "$@"
		;;
	*) usage ;;
	esac
}

# shellcheck source=test/lab/witness.sh
. "$HERE/witness.sh"
# shellcheck source=test/lab/registry.sh
. "$HERE/registry.sh"

main "$@"
