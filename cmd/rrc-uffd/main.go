// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command rrc-uffd makes a userfaultfd in another process and hands it to
// its parent: `rrc-uffd PID`, with fd 3 a unix socket over which the
// descriptor is sent (SCM_RIGHTS, one-byte message). It is the helper of
// memtrack.Take: the ptrace work runs in its own short-lived process
// because the shim, a subreaper, reaps with wait4(-1) and would steal the
// ptrace stops.
//
// Exit status 0: sent; 1: failed (one line on stderr); 2: refused, the
// process has a seccomp filter that could not be suspended.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iorrc/rrc/runtime/memtrack"
)

// timeout bounds the wait for the target to stop.
const timeout = 5 * time.Second

func main() {
	os.Exit(run())
}

func run() int {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: rrc-uffd PID (fd 3: unix socket)")
		return memtrack.HelperExitFailed
	}
	pid, err := strconv.Atoi(os.Args[1])
	if err != nil || pid <= 0 {
		fmt.Fprintf(os.Stderr, "rrc-uffd: bad pid %q\n", os.Args[1])
		return memtrack.HelperExitFailed
	}
	// SIGTERM (Take's ctx done) makes MakeUffd give up while the target
	// has not stopped; after that it completes the restore.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	uffd, err := memtrack.MakeUffd(ctx, pid)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rrc-uffd: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		if errors.Is(err, memtrack.ErrSeccomp) {
			return memtrack.HelperExitRefused
		}
		return memtrack.HelperExitFailed
	}
	defer uffd.Close()
	if err := memtrack.SendFile(3, uffd); err != nil {
		fmt.Fprintf(os.Stderr, "rrc-uffd: %v\n", err)
		return memtrack.HelperExitFailed
	}
	return 0
}
