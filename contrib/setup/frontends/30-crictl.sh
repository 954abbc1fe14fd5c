# shellcheck shell=bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# crictl, the CRI client Kubernetes' node tools use, to drive containerd's CRI plugin with
# io.rrc.v1 as a RuntimeClass handler (test/e2e TestCRIFailover). In a directory of its own,
# not on PATH: the test looks for it there. Sourced by contrib/setup/setup.sh.
CRICTL_VERSION=v1.37.0
CRICTL_BIN_DIR=/opt/rrc/cri-tools/bin

setup_crictl() {
	go_install_pinned crictl "$CRICTL_VERSION" "$CRICTL_BIN_DIR" sigs.k8s.io/cri-tools/cmd/crictl
}

setup_crictl
