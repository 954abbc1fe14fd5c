// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/iorrc/rrc/shim/settings"
)

// protectCmd implements `rrcctl protect -backup ADDR ID`: a container a
// failover restored on this host takes the backup listening at ADDR. The
// request is a task update carrying settings.AnnotationProtect, which the
// container's shim reads; progress is in `rrcctl status`.
func protectCmd(ctx context.Context, s session, args []string, timeout time.Duration, w io.Writer) error {
	fs := flag.NewFlagSet("rrcctl protect", flag.ContinueOnError)
	backup := fs.String("backup", "", "the new backup's listen address, host:port (its container started with role backup, listening there)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || *backup == "" {
		if err == nil {
			fmt.Fprintln(fs.Output(), "usage: rrcctl protect -backup HOST:PORT ID")
			fs.PrintDefaults()
		}
		return errUsage
	}
	id := fs.Arg(0)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := containerd.New(s.address)
	if err != nil {
		return fmt.Errorf("connect to containerd at %s: %w", s.address, err)
	}
	defer client.Close()
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("container %s in namespace %s: %w", id, s.ns, err)
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return fmt.Errorf("task of container %s: %w", id, err)
	}
	err = t.Update(ctx, func(_ context.Context, _ *containerd.Client, u *containerd.UpdateTaskInfo) error {
		u.Annotations = map[string]string{settings.AnnotationProtect: *backup}
		return nil
	})
	if err != nil {
		return fmt.Errorf("protecting container %s with the backup at %s: %w", id, *backup, err)
	}
	fmt.Fprintf(w, "%s: pairing with the backup at %s; serving unprotected until it is in sync (rrcctl status)\n", id, *backup)
	return nil
}
