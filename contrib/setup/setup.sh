#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Idempotent machine setup for io.rrc.v1 (called by `make setup`). Run as root on Debian 12.
#
# Installs what is missing, prints one line per component ("found" or "installing"):
#   * Debian bookworm packages (apt): runc, iptables, iproute2, busybox-static, redis,
#     lighttpd and memcached (lab images), tcpdump,
#     the bookworm libraries CRIU links against, ca-certificates (for the Go module proxy);
#   * containerd, ctr and containerd-shim-runc-v2 at the version of
#     github.com/containerd/containerd/v2 pinned in go.mod, built with `go install`;
#   * CRIU 4.2.1 from Debian forky, unpacked with its libraries into a private prefix
#     (/opt/rrc/criu) and run through a wrapper /usr/local/sbin/criu;
#   * criu-written.so, built from contrib/criu-written with gcc: preloaded into CRIU by
#     the shim, it gives CRIU incremental memory dumps on kernels without soft-dirty;
#   * golangci-lint (make lint) at a pinned version, built with `go install`;
#   * the front ends beside ctr, one file each in contrib/setup/frontends: the CNI plugins
#     (/opt/cni/bin), nerdctl (/opt/rrc/nerdctl/bin), crictl (/opt/rrc/cri-tools/bin),
#     dockerd and docker from Debian forky (/opt/rrc/docker);
#   * etcd and etcdctl from bookworm, unpacked into /opt/rrc/etcd (contrib/setup/etcd.sh),
#     the witness of fenced pairs that the lab starts (docs/FENCING.md);
#   * bookworm's docker-registry, unpacked into /opt/rrc/registry (contrib/setup/registry.sh),
#     the OCI registry the lab serves its images from with LAB_REGISTRY=1 (docs/LAB.md);
# then checks the kernel features the shim needs. See docs/SETUP.md.
#
# Options:
#   --force-containerd   rebuild and reinstall containerd/ctr/shim even if the version matches
#   --force-criu         re-download and reinstall CRIU even if criu >= 4.2 is on PATH
#   --bindir DIR         install containerd, ctr, containerd-shim-runc-v2 and golangci-lint
#                        into DIR (default /usr/local/bin)
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SELF_DIR/../.." && pwd)
# shellcheck source=contrib/setup/lib.sh
. "$SELF_DIR/lib.sh"

BINDIR=/usr/local/bin
SBINDIR=/usr/local/sbin
CRIU_PREFIX=/opt/rrc/criu
CRIU_MIN=4.2          # 3.17 (bookworm) and 4.1.1 (trixie) do not work on this kernel
CRIU_TESTED=4.2.1-1   # the forky build that was validated (docs/SETUP.md)
FORCE_CONTAINERD=0
FORCE_CRIU=0

# Debian bookworm packages installed with apt-get.
APT_PKGS=(
	ca-certificates runc iptables iproute2 busybox-static redis-server redis-tools
	# containerd's integration tests: TestMountAtRuntime makes an XFS file system
	xfsprogs
	# libraries of forky's criu that bookworm provides in a good enough version
	libprotobuf-c1 libbsd0 libmnl0 libuuid1 libffi8
	# builds contrib/criu-written (a small library preloaded into CRIU)
	gcc libc6-dev
	# the web server image of the lab (rrc.local/lighttpd), and tcpdump for
	# looking at a failover's packets (docs/NETFILTER.md)
	lighttpd tcpdump
	# the multi-threaded cache image of the lab (rrc.local/memcached)
	memcached
	# the demo scrapes the metrics endpoint as an operator would; the demo and
	# make bench read status files with jq
	curl jq
)
CRIU_WRITTEN_LIB=/usr/local/lib/rrc/criu-written.so
# CRIU and the libraries bookworm cannot provide: fetched with `apt-get download` from a
# private apt configuration (lib.sh, private_apt_*), unpacked into $CRIU_PREFIX (never
# installed system-wide).
CRIU_FORKY=(criu libcompel1 libnet9 libnl-3-200)
CRIU_TRIXIE=(
	libc6 libgnutls30t64 libnettle8t64 libhogweed6t64 libunistring5 libnftables1
	libnftnl11 libxtables12 libgmp10 libp11-kit0 libtasn1-6 libidn2-0 libjansson4
)
CONTAINERD_BINS=(containerd ctr containerd-shim-runc-v2)
# make lint's linter: a pinned version, so that a new release's new checks
# never fail make test unasked.
GOLANGCI_LINT_VERSION=v2.15.0

usage() { sed -n '5,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
	case $1 in
	--force-containerd) FORCE_CONTAINERD=1 ;;
	--force-criu) FORCE_CRIU=1 ;;
	--bindir) BINDIR=${2:?--bindir needs a directory}; shift ;;
	--bindir=*) BINDIR=${1#*=} ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown option: $1 (see --help)" ;;
	esac
	shift
done

# ---------------------------------------------------------------- cleanup on exit
CLEANUP=()
cleanup() {
	local i
	for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" || true; done
}
trap cleanup EXIT

# ---------------------------------------------------------------- preconditions
[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
	die "needs a Debian system (dpkg, apt-get)"
if ! grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
	warn "this script is written for Debian 12 (bookworm); continuing anyway"
fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=/usr/local/go/bin:$PATH
fi

# ---------------------------------------------------------------- 1. apt packages
setup_apt() {
	local p v missing=()
	for p in "${APT_PKGS[@]}"; do
		v=$(deb_version "$p")
		if [[ -n $v ]]; then
			log "$p $v found (apt)"
		else
			missing+=("$p")
		fi
	done
	((${#missing[@]})) || return 0

	for p in "${missing[@]}"; do log "installing $p (apt)"; done
	# Keep the packages' maintainer scripts from starting services (redis-server).
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\n# temporary, from io.rrc.v1 contrib/setup/setup.sh\nexit 101\n' \
			>/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		CLEANUP+=("rm -f /usr/sbin/policy-rc.d")
	fi
	quiet "apt-get update failed" apt-get -q update
	quiet "apt-get install ${missing[*]} failed" \
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	for p in "${missing[@]}"; do
		v=$(deb_version "$p")
		[[ -n $v ]] || die "$p is still not installed after apt-get install"
		log "$p $v installed (apt)"
	done
	# The tests run their own Redis in containers; a system service is not wanted.
	for svc in redis-server lighttpd memcached; do
		if [[ " ${missing[*]} " == *" $svc "* && -d /run/systemd/system ]]; then
			systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
			log "$svc.service disabled (the tests start their own)"
		fi
	done
}

# ---------------------------------------------------------------- 2. containerd
# Version of github.com/containerd/containerd/v2 required by the repository's go.mod.
containerd_wanted() {
	local v=""
	if command -v go >/dev/null; then
		v=$(cd "$REPO_ROOT" && GOFLAGS=-mod=readonly GOWORK=off \
			go list -m -f '{{.Version}}' github.com/containerd/containerd/v2 2>/dev/null) || v=""
	fi
	if [[ -z $v ]]; then # go missing or go.mod not loadable right now: parse it
		v=$(awk '$1 == "require" && $2 == "github.com/containerd/containerd/v2" { print $3; exit }
		         $1 == "github.com/containerd/containerd/v2" && $2 ~ /^v/ { print $2; exit }' \
			"$REPO_ROOT/go.mod")
	fi
	[[ -n $v ]] || die "cannot find github.com/containerd/containerd/v2 in $REPO_ROOT/go.mod"
	printf '%s\n' "$v"
}

# Version a containerd binary reports, normalised ("v2.3.7+unknown" -> "2.3.7").
containerd_bin_version() {
	local bin=$1 v
	[[ -x $bin ]] || return 0
	case ${bin##*/} in
	containerd-shim-runc-v2) v=$("$bin" -v 2>/dev/null | awk '/Version:/ { print $2; exit }') ;;
	*) v=$("$bin" --version 2>/dev/null | awk '{ print $3; exit }') ;;
	esac
	v=${v#v}
	printf '%s\n' "${v%%+*}"
}

setup_containerd() {
	local want b have stale=() tmp start
	want=$(containerd_wanted)
	for b in "${CONTAINERD_BINS[@]}"; do
		have=$(containerd_bin_version "$BINDIR/$b")
		if [[ $FORCE_CONTAINERD -eq 0 && $have == "${want#v}" ]]; then
			log "$b $have found at $BINDIR/$b"
		else
			stale+=("$b")
		fi
	done
	((${#stale[@]})) || return 0

	command -v go >/dev/null ||
		die "Go is needed to build containerd $want: install Go (>= the version in go.mod) to /usr/local/go"
	for b in "${stale[@]}"; do log "installing $b $want (go install from the Go module proxy)"; done
	tmp=$(mktemp -d /tmp/rrc-setup-containerd.XXXXXX)
	CLEANUP+=("rm -rf '$tmp'")
	start=$SECONDS
	local pkgs=()
	for b in "${stale[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$b@$want"); done
	# Build outside the repository so that its go.mod plays no part.
	(cd "$tmp" && quiet "go install of containerd $want failed" \
		env GOBIN="$tmp/bin" GOFLAGS=-buildvcs=false GOWORK=off go install "${pkgs[@]}")
	mkdir -p "$BINDIR"
	for b in "${stale[@]}"; do
		# Write next to the target and rename: safe while the old binary is running.
		install -m 0755 "$tmp/bin/$b" "$BINDIR/.$b.rrc-new"
		mv -f "$BINDIR/.$b.rrc-new" "$BINDIR/$b"
		have=$(containerd_bin_version "$BINDIR/$b")
		[[ $have == "${want#v}" ]] || die "$BINDIR/$b reports version '$have', expected ${want#v}"
		log "$b $have installed at $BINDIR/$b (built in $((SECONDS - start)) s)"
	done
}

# ---------------------------------------------------------------- 3. CRIU
# Library directories of an unpacked prefix, loader first; sets LOADER_DIR and LIB_PATH.
criu_prefix_paths() {
	local root=$1 d
	LOADER_DIR="" LIB_PATH=""
	for d in usr/lib/x86_64-linux-gnu lib/x86_64-linux-gnu; do
		[[ -d $root/$d ]] || continue
		[[ -z $LOADER_DIR && -e $root/$d/ld-linux-x86-64.so.2 ]] && LOADER_DIR=$d
		LIB_PATH+="${LIB_PATH:+:}$CRIU_PREFIX/$d"
	done
	[[ -n $LOADER_DIR ]] || die "no ld-linux-x86-64.so.2 in the unpacked CRIU prefix $root"
	LIB_PATH+=":/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" # bookworm's libs
}

install_criu() {
	local new v p pkgs=() out
	[[ $(dpkg --print-architecture) == amd64 ]] || die "the CRIU prefix is built for amd64 only"

	private_apt_update
	v=$(private_apt_version criu/forky)
	[[ -n $v ]] || die "Debian forky has no criu package (mirror $PRIVATE_APT_MIRROR)"
	if [[ $v != "$CRIU_TESTED" ]]; then
		version_ge "$v" "$CRIU_MIN" || die "forky's criu is $v, need >= $CRIU_MIN"
		warn "forky now ships criu $v; $CRIU_TESTED is the tested one; using $v"
	fi
	for p in "${CRIU_FORKY[@]}"; do
		case $p in criu | libcompel1) pkgs+=("$p=$v") ;; *) pkgs+=("$p/forky") ;; esac
	done
	for p in "${CRIU_TRIXIE[@]}"; do pkgs+=("$p/trixie"); done

	new=$CRIU_PREFIX.new
	rm -rf "$new"
	CLEANUP+=("rm -rf '$new'")
	private_apt_unpack "$new" "${pkgs[@]}"
	private_apt_done
	[[ -x $new/usr/sbin/criu ]] || die "criu binary missing from the unpacked packages"

	# Every library must resolve, and from the prefix or the system, before switching over.
	criu_prefix_paths "$new"
	local newpath=${LIB_PATH//$CRIU_PREFIX/$new}
	out=$("$new/$LOADER_DIR/ld-linux-x86-64.so.2" --library-path "$newpath" --list "$new/usr/sbin/criu" 2>&1) ||
		{ printf '%s\n' "$out" >&2; die "the unpacked criu cannot be loaded"; }
	if grep -q 'not found' <<<"$out"; then
		printf '%s\n' "$out" >&2
		die "the unpacked criu misses libraries (see above)"
	fi
	"$new/$LOADER_DIR/ld-linux-x86-64.so.2" --library-path "$newpath" "$new/usr/sbin/criu" --version \
		>/dev/null 2>&1 || die "the unpacked criu does not run"

	# Switch the prefix over, then write the wrapper.
	swap_prefix "$new" "$CRIU_PREFIX"
	mkdir -p "$SBINDIR"
	cat >"$SBINDIR/.criu.rrc-new" <<-EOF
		#!/bin/sh
		# criu $v from Debian forky, installed by io.rrc.v1 contrib/setup/setup.sh (docs/SETUP.md).
		# The binary needs glibc >= 2.38 (Debian 12 has 2.36), so it runs through the dynamic
		# loader of the private prefix $CRIU_PREFIX, which holds its own glibc and libraries.
		# Remove with: rm -rf $SBINDIR/criu $CRIU_PREFIX /var/lib/rrc/apt
		PREFIX=$CRIU_PREFIX
		P=\$PREFIX/$LOADER_DIR
		exec "\$P/ld-linux-x86-64.so.2" --library-path "$LIB_PATH" "\$PREFIX/usr/sbin/criu" "\$@"
	EOF
	chmod 0755 "$SBINDIR/.criu.rrc-new"
	mv -f "$SBINDIR/.criu.rrc-new" "$SBINDIR/criu"
	hash -r
}

setup_criu() {
	local bin ver out path_criu
	bin=$(command -v criu || true) ver=""
	if [[ -n $bin ]]; then ver=$(criu_version "$bin"); fi
	if [[ $FORCE_CRIU -eq 0 && -n $ver ]] && version_ge "$ver" "$CRIU_MIN"; then
		log "criu $ver found at $bin"
	else
		if [[ -n $bin ]]; then
			log "installing criu (forky, into $CRIU_PREFIX; found ${ver:-a broken criu} at $bin)"
		else
			log "installing criu (forky, into $CRIU_PREFIX)"
		fi
		install_criu
		bin=$(command -v criu || true)
		[[ $bin == "$SBINDIR/criu" ]] ||
			die "installed $SBINDIR/criu but 'criu' on PATH is '${bin:-nothing}': put $SBINDIR first in PATH"
		ver=$(criu_version "$bin")
		[[ -n $ver ]] && version_ge "$ver" "$CRIU_MIN" || die "$bin --version does not report >= $CRIU_MIN"
		log "criu $ver installed at $bin ($(wc -l <"$CRIU_PREFIX/MANIFEST") packages in $CRIU_PREFIX)"
	fi

	# runc runs `criu` from the PATH it inherits (containerd's, systemd's default for services).
	path_criu=$(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		sh -c 'command -v criu' || true)
	if [[ $path_criu != "$bin" ]]; then
		warn "with the default service PATH, runc would run '${path_criu:-no criu}', not $bin"
	fi

	if ! out=$(criu check 2>&1) || ! grep -q 'Looks good' <<<"$out"; then
		printf '%s\n' "$out" >&2
		die "'criu check' failed: CRIU $ver cannot checkpoint on this kernel (see above and docs/SETUP.md)"
	fi
	log "criu check: $(grep 'Looks good' <<<"$out" | head -n1)"
}

# ---------------------------------------------------------------- 3b. criu-written.so
# Built every time (well under a second) and installed only if it differs, so that a
# changed source reaches the machine and an unchanged one is left alone.
setup_criu_written() {
	local src=$REPO_ROOT/contrib/criu-written/criu-written.c tmp out
	tmp=$(mktemp -d /tmp/rrc-setup-written.XXXXXX)
	CLEANUP+=("rm -rf '$tmp'")
	quiet "building $src failed" gcc -O2 -Wall -Wextra -Werror -shared -fPIC \
		-o "$tmp/criu-written.so" "$src" -ldl
	if cmp -s "$tmp/criu-written.so" "$CRIU_WRITTEN_LIB"; then
		log "criu-written.so found at $CRIU_WRITTEN_LIB (up to date)"
	else
		mkdir -p "$(dirname "$CRIU_WRITTEN_LIB")"
		install -m 0644 "$tmp/criu-written.so" "$CRIU_WRITTEN_LIB.new"
		mv -f "$CRIU_WRITTEN_LIB.new" "$CRIU_WRITTEN_LIB"
		log "criu-written.so built from contrib/criu-written and installed at $CRIU_WRITTEN_LIB"
	fi
	if out=$(LD_PRELOAD=$CRIU_WRITTEN_LIB criu check --feature mem_dirty_track 2>&1); then
		log "criu-written.so: CRIU accepts --track-mem with it (incremental memory dumps)"
	else
		warn "criu-written.so: CRIU still refuses --track-mem with it, every dump will be full: $out"
	fi
}

# ---------------------------------------------------------------- 3c. golangci-lint
# Version a golangci-lint binary reports ("2.15.0"), empty if none runs.
golangci_lint_version() {
	[[ -x $1 ]] || return 0
	"$1" version --short 2>/dev/null | head -n1 || true
}

setup_golangci_lint() {
	local bin=$BINDIR/golangci-lint have tmp start
	have=$(golangci_lint_version "$bin")
	if [[ $have == "${GOLANGCI_LINT_VERSION#v}" ]]; then
		log "golangci-lint $have found at $bin"
		return 0
	fi
	command -v go >/dev/null ||
		die "Go is needed to build golangci-lint $GOLANGCI_LINT_VERSION: install Go to /usr/local/go"
	log "installing golangci-lint $GOLANGCI_LINT_VERSION (go install from the Go module proxy${have:+; found $have})"
	tmp=$(mktemp -d /tmp/rrc-setup-lint.XXXXXX)
	CLEANUP+=("rm -rf '$tmp'")
	start=$SECONDS
	# Outside the repository, so that its go.mod plays no part.
	(cd "$tmp" && quiet "go install of golangci-lint $GOLANGCI_LINT_VERSION failed" \
		env GOBIN="$tmp/bin" GOFLAGS=-buildvcs=false GOWORK=off \
		go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION")
	mkdir -p "$BINDIR"
	install -m 0755 "$tmp/bin/golangci-lint" "$BINDIR/.golangci-lint.rrc-new"
	mv -f "$BINDIR/.golangci-lint.rrc-new" "$bin"
	have=$(golangci_lint_version "$bin")
	[[ $have == "${GOLANGCI_LINT_VERSION#v}" ]] || die "$bin reports version '$have', expected ${GOLANGCI_LINT_VERSION#v}"
	log "golangci-lint $have installed at $bin (built in $((SECONDS - start)) s)"
}

# ---------------------------------------------------------------- 4. kernel prerequisites
check_kernel() {
	local ns="rrc-setup-$$" out
	# cgroup freezer: v1 hierarchy, or cgroup v2 (freezer built in as cgroup.freeze).
	if grep -qs '^[^ ]* /sys/fs/cgroup/freezer cgroup .*freezer' /proc/mounts; then
		log "kernel: cgroup v1 freezer found at /sys/fs/cgroup/freezer"
	elif [[ -e /sys/fs/cgroup/cgroup.controllers ]] && grep -qs ' cgroup2 ' /proc/mounts; then
		log "kernel: cgroup v2 freezer found (cgroup.freeze)"
	else
		warn "kernel: no cgroup freezer found (CRIU and runc pause need one)"
	fi

	if ! out=$(ip netns add "$ns" 2>&1); then
		warn "kernel: network namespaces do not work: $out"
		return 0
	fi
	CLEANUP+=("ip netns delete '$ns' 2>/dev/null")
	log "kernel: network namespaces work"
	if out=$(ip -n "$ns" link add rrc0 type veth peer name rrc1 2>&1); then
		log "kernel: veth pairs work"
	else
		warn "kernel: cannot create a veth pair: $out"
	fi
	if out=$(ip netns exec "$ns" iptables -w -A OUTPUT -p tcp -j NFQUEUE --queue-num 0 2>&1) &&
		ip netns exec "$ns" iptables -w -S OUTPUT 2>/dev/null | grep -q NFQUEUE; then
		log "kernel: iptables NFQUEUE target works ($(iptables --version 2>/dev/null))"
	else
		warn "kernel: iptables -j NFQUEUE does not work (xt_NFQUEUE missing?): $out"
	fi
	ip netns delete "$ns" 2>/dev/null || true

	# Informational: soft-dirty is what plain CRIU needs for incremental dumps; without it,
	# io.rrc.v1 tracks writes with userfaultfd write-protect and criu-written.so.
	if criu check --feature mem_dirty_track >/dev/null 2>&1; then
		log "kernel: soft-dirty memory tracking available"
	else
		log "kernel: no soft-dirty memory tracking (io.rrc.v1 uses userfaultfd write-protect instead)"
	fi
}

setup_apt
setup_containerd
setup_criu
setup_criu_written
setup_golangci_lint
# The front ends beside ctr (CNI plugins, nerdctl, crictl, dockerd): one file each, in order.
for f in "$SELF_DIR"/frontends/*.sh; do
	# shellcheck source=/dev/null
	. "$f"
done
# etcd, the witness of fenced pairs (the lab's LAB_WITNESS=1)
# shellcheck source=contrib/setup/etcd.sh
. "$SELF_DIR/etcd.sh"
# the registry the lab pulls its images from (the lab's LAB_REGISTRY=1), no system service
# shellcheck source=contrib/setup/registry.sh
. "$SELF_DIR/registry.sh"
check_kernel
log "done"
