// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// NewEmpty makes the network namespace of container name, bind-mounted at
// opts.Dir/name with loopback up and nothing else, for the OCI hooks of the
// container's spec to fill. nerdctl makes its CNI networks from a
// createRuntime hook in the namespace runc makes: a namespace the shim
// could not reach before the hook, and that a backup, which runs no runc
// create, would never get. Once the hooks have run, AdoptLinks takes what
// they made as Adopt does; Remove deletes the namespace as Create's (and
// CleanupStale after a crashed shim).
func NewEmpty(ctx context.Context, name string, opts Options) (_ *ServiceNetwork, err error) {
	dir, err := checkOptions(name, &opts)
	if err != nil {
		return nil, err
	}
	s := &ServiceNetwork{
		name:    name,
		nsPath:  filepath.Join(dir, name),
		dir:     dir,
		adopted: true,
		made:    true,
		opts:    opts,
		log:     opts.logger().With("container", name),
	}
	if _, err := os.Lstat(s.nsPath); err == nil {
		return nil, fmt.Errorf("service network %s: %s exists (left by a crashed shim? CleanupStale removes it)", name, s.nsPath)
	}
	if err := prepareDir(dir); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	owner, err := selfOwner()
	if err != nil {
		return nil, fmt.Errorf("service network %s: read own start time: %w", name, err)
	}
	// The record first, as in Create: CleanupStale finds what a crash leaves.
	if err := writeRecord(recordPath(dir, name), owner); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			if rerr := s.Remove(context.WithoutCancel(ctx)); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
			}
		}
	}()
	if err := s.makeNamespace(); err != nil {
		return nil, fmt.Errorf("service network %s: %w", name, err)
	}
	s.log.Info("empty network namespace made for the spec's hooks", "netns", s.nsPath)
	return s, nil
}

// AdoptLinks takes the interfaces the hooks made in a namespace of
// NewEmpty, as Adopt does: with standby they are set down until Promote.
func (s *ServiceNetwork) AdoptLinks(standby bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.made || len(s.links) > 0 {
		return fmt.Errorf("service network %s: AdoptLinks is for a namespace of NewEmpty, once", s.name)
	}
	if err := s.adoptLinks(standby); err != nil {
		return fmt.Errorf("service network %s: adopt what the hooks made: %w", s.name, err)
	}
	if len(s.links) == 0 {
		return fmt.Errorf("service network %s: the spec's hooks made no interface in %s", s.name, s.nsPath)
	}
	s.log.Info("network namespace of the hooks adopted", "links", s.linkNames(), "standby", standby)
	return nil
}
