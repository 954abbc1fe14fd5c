// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Freezer freezes and thaws the tasks of one cgroup. We freeze the
// container ourselves rather than let CRIU do it because CRIU polls the v1
// freezer in 100 ms steps; here the state is polled every few tens of
// microseconds, so the freeze costs what the kernel needs and no more.
type Freezer struct {
	// Dir is the cgroup directory: a v1 freezer hierarchy directory
	// (freezer.state) or a v2 cgroup (cgroup.freeze, cgroup.events).
	Dir string
	// V2 selects the cgroup v2 interface.
	V2 bool
	// Timeout bounds Freeze when ctx has no earlier deadline (default 2 s).
	Timeout time.Duration
}

// NewFreezer returns the freezer of the cgroup at dir, detecting v1 or v2
// from the files present.
func NewFreezer(dir string) (*Freezer, error) {
	if _, err := os.Stat(filepath.Join(dir, "freezer.state")); err == nil {
		return &Freezer{Dir: dir}, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err == nil {
		return &Freezer{Dir: dir, V2: true}, nil
	}
	return nil, fmt.Errorf("cgroup %s has neither freezer.state nor cgroup.freeze", dir)
}

// Freeze freezes the cgroup and returns once the kernel reports every task
// frozen. On failure it thaws again so that the container is not left stopped.
func (f *Freezer) Freeze(ctx context.Context) error {
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := f.freeze(ctx)
	if err != nil {
		if terr := f.Thaw(context.WithoutCancel(ctx)); terr != nil {
			err = fmt.Errorf("%w (and thaw after it: %v)", err, terr)
		}
	}
	return err
}

func (f *Freezer) freeze(ctx context.Context) error {
	stateFile, want, ask := f.files(true)
	if err := writeFile(filepath.Join(f.Dir, ask.file), ask.value); err != nil {
		return fmt.Errorf("freeze %s: %w", f.Dir, err)
	}
	// Poll fine-grained: a freeze completes as soon as every task has been
	// scheduled once, usually well under a millisecond. Back off only to
	// 100 µs (a read of a cgroup file costs a few µs), and re-request the
	// freeze now and then: a v1 freeze can stall on a task that was in an
	// uninterruptible sleep (runc does the same).
	const maxDelay = 100 * time.Microsecond
	delay := 10 * time.Microsecond
	for i := 0; ; i++ {
		ok, err := f.check(stateFile, want)
		if err != nil {
			return fmt.Errorf("freeze %s: %w", f.Dir, err)
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("freeze %s: not frozen: %w", f.Dir, err)
		}
		time.Sleep(delay)
		if delay < maxDelay {
			delay *= 2
		}
		if !f.V2 && i%500 == 499 {
			if err := writeFile(filepath.Join(f.Dir, ask.file), ask.value); err != nil {
				return fmt.Errorf("freeze %s again: %w", f.Dir, err)
			}
		}
	}
}

// Thaw lets the cgroup's tasks run again. It returns once the kernel has
// accepted the request; thawing needs no wait.
func (f *Freezer) Thaw(ctx context.Context) error {
	_, _, ask := f.files(false)
	if err := writeFile(filepath.Join(f.Dir, ask.file), ask.value); err != nil {
		return fmt.Errorf("thaw %s: %w", f.Dir, err)
	}
	return nil
}

// Frozen reports whether the cgroup is fully frozen.
func (f *Freezer) Frozen() (bool, error) {
	stateFile, want, _ := f.files(true)
	return f.check(stateFile, want)
}

type fileWrite struct{ file, value string }

// files returns the file to read, the content that means done, and the
// write that requests the state.
func (f *Freezer) files(freeze bool) (state string, want []byte, ask fileWrite) {
	if f.V2 {
		v := "0"
		if freeze {
			v = "1"
		}
		return "cgroup.events", []byte("frozen " + v), fileWrite{"cgroup.freeze", v}
	}
	if freeze {
		return "freezer.state", []byte("FROZEN"), fileWrite{"freezer.state", "FROZEN"}
	}
	return "freezer.state", []byte("THAWED"), fileWrite{"freezer.state", "THAWED"}
}

func (f *Freezer) check(stateFile string, want []byte) (bool, error) {
	b, err := os.ReadFile(filepath.Join(f.Dir, stateFile))
	if err != nil {
		return false, err
	}
	if f.V2 {
		for _, line := range bytes.Split(b, []byte("\n")) {
			if bytes.Equal(bytes.TrimSpace(line), want) {
				return true, nil
			}
		}
		return false, nil
	}
	return bytes.Equal(bytes.TrimSpace(b), want), nil
}

func writeFile(path, value string) error {
	// O_WRONLY without O_CREATE/O_TRUNC: cgroup files exist and must not be
	// created or truncated.
	fd, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fd.WriteString(value)
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	return err
}
