#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# etcd, the witness of fenced pairs (docs/FENCING.md): bookworm's etcd-server and
# etcd-client, unpacked into a private prefix (/opt/rrc/etcd/bin: etcd, etcdctl). The
# packages are only downloaded and unpacked, never installed: installing etcd-server would
# start a system etcd on port 2379. The lab starts its own members (LAB_WITNESS=1,
# docs/LAB.md). Sourced by contrib/setup/setup.sh; also runs on its own:
#   bash contrib/setup/etcd.sh
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	# shellcheck source=contrib/setup/lib.sh
	. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
	CLEANUP=()
	trap 'for c in "${CLEANUP[@]}"; do eval "$c"; done' EXIT
fi
ETCD_PREFIX=/opt/rrc/etcd
ETCD_MIN=3.4.23 # bookworm's; any v3 API server serves go.etcd.io/etcd/client/v3
ETCD_PKGS=(etcd-server etcd-client)

# Version an etcd binary reports ("3.4.23"), empty if it does not run.
etcd_version() {
	[[ -x $1 ]] || return 0
	"$1" --version 2>/dev/null | awk '/^etcd Version:/ { print $3; exit }' || true
}

install_etcd() {
	local new p
	new=$ETCD_PREFIX.new
	rm -rf "$new"
	CLEANUP+=("rm -rf '$new'")
	apt_unpack "$new" "${ETCD_PKGS[@]}"
	mkdir -p "$new/bin"
	for p in etcd etcdctl; do
		[[ -x $new/root/usr/bin/$p ]] || die "$p missing from the unpacked etcd packages"
		ln -s "../root/usr/bin/$p" "$new/bin/$p"
	done
	[[ -n $(etcd_version "$new/bin/etcd") ]] || die "the unpacked etcd does not run"
	swap_prefix "$new" "$ETCD_PREFIX"
}

setup_etcd() {
	local have
	have=$(etcd_version "$ETCD_PREFIX/bin/etcd")
	if [[ -n $have ]] && version_ge "$have" "$ETCD_MIN" && [[ -x $ETCD_PREFIX/bin/etcdctl ]]; then
		log "etcd $have found in $ETCD_PREFIX/bin"
		return 0
	fi
	log "installing etcd and etcdctl (bookworm's etcd-server and etcd-client, unpacked into $ETCD_PREFIX)"
	install_etcd
	log "etcd $(etcd_version "$ETCD_PREFIX/bin/etcd") installed in $ETCD_PREFIX/bin ($(tr '\n' ' ' <"$ETCD_PREFIX/MANIFEST"))"
}

setup_etcd
