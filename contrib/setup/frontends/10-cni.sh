# shellcheck shell=bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# The CNI plugins that nerdctl and containerd's CRI plugin call to make a container's network
# namespace, in their usual place /opt/cni/bin. Sourced by contrib/setup/setup.sh.
CNI_PLUGINS_VERSION=v1.10.0
CNI_BIN_DIR=/opt/cni/bin
CNI_PLUGINS=(
	main/bridge main/macvlan main/loopback ipam/host-local ipam/static
	meta/portmap meta/firewall meta/tuning
)

setup_cni_plugins() {
	local p pkgs=()
	for p in "${CNI_PLUGINS[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p"); done
	go_install_pinned cni-plugins "$CNI_PLUGINS_VERSION" "$CNI_BIN_DIR" "${pkgs[@]}"
}

setup_cni_plugins
