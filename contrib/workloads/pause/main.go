// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command pause is the sandbox ("pause") container of the lab's CRI pods
// (rrc.local/pause): it holds the pod's namespaces by doing nothing until
// SIGTERM or SIGINT, and reaps children re-parented to it. Nothing can be
// pulled from a registry on the project's machine, so the lab builds its
// own instead of registry.k8s.io/pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for { // reap every exited child; -1: any, WNOHANG: do not block
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
