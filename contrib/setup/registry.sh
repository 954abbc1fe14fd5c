#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# The lab's OCI registry (LAB_REGISTRY=1, docs/LAB.md): bookworm's docker-registry
# (distribution's registry), unpacked into a private prefix (/opt/rrc/registry/bin/registry).
# The package is only downloaded and unpacked, never installed: its maintainer scripts would
# add a system user, enable docker-registry.service and its init script at boot, and start a
# registry on :5000 now (invoke-rc.d runs the init script where systemd is not PID 1, as in
# a container). The lab starts its own on its network. Sourced by contrib/setup/setup.sh;
# also runs on its own:
#   bash contrib/setup/registry.sh
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	# shellcheck source=contrib/setup/lib.sh
	. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
	CLEANUP=()
	trap 'for c in "${CLEANUP[@]}"; do eval "$c"; done' EXIT
fi
REGISTRY_PREFIX=/opt/rrc/registry
REGISTRY_MIN=2.8.2 # bookworm's; speaks the OCI distribution API containerd pulls and pushes with

# Version a registry binary reports ("2.8.2+ds1"), empty if it does not run.
registry_version() {
	[[ -x $1 ]] || return 0
	"$1" --version 2>/dev/null | awk '{ print $3; exit }' || true
}

install_registry() {
	local new
	new=$REGISTRY_PREFIX.new
	rm -rf "$new"
	CLEANUP+=("rm -rf '$new'")
	apt_unpack "$new" docker-registry
	[[ -x $new/root/usr/bin/docker-registry ]] || die "docker-registry missing from the unpacked package"
	mkdir -p "$new/bin"
	ln -s ../root/usr/bin/docker-registry "$new/bin/registry"
	[[ -n $(registry_version "$new/bin/registry") ]] || die "the unpacked docker-registry does not run"
	swap_prefix "$new" "$REGISTRY_PREFIX"
}

# registry_service_check: no system registry runs or starts at boot (one installed by
# hand, say), since the lab's would then share the machine with it; a warning, not an error.
registry_service_check() {
	local p
	for p in $(pgrep -x docker-registry || true); do
		warn "a docker-registry runs (pid $p, $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)): not the lab's"
	done
	if [[ -n $(deb_version docker-registry) ]]; then
		warn "the docker-registry package is installed system-wide; the lab uses $REGISTRY_PREFIX and none of its services"
	fi
}

setup_registry() {
	local have
	have=$(registry_version "$REGISTRY_PREFIX/bin/registry")
	if [[ -n $have ]] && version_ge "$have" "$REGISTRY_MIN"; then
		log "registry $have found in $REGISTRY_PREFIX/bin"
	else
		log "installing registry (bookworm's docker-registry, unpacked into $REGISTRY_PREFIX; no service)"
		install_registry
		log "registry $(registry_version "$REGISTRY_PREFIX/bin/registry") installed in $REGISTRY_PREFIX/bin ($(tr '\n' ' ' <"$REGISTRY_PREFIX/MANIFEST"))"
	fi
	registry_service_check
}

setup_registry
