// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Remove takes away what Create or NewEmpty made: the service interface (and
// so the veth pair), the namespace bind mount, its file and the owner record. For
// an adopted namespace it only stops announcing and lets go of it: the
// namespace belongs to whoever made it. It is idempotent, and tolerates
// pieces that are already gone (a crashed host lost its /run).
func (s *ServiceNetwork) Remove(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return nil
	}
	s.stopAnnouncing()
	for _, l := range s.links {
		for _, a := range l.announcer {
			a.close()
		}
	}
	if s.replay != nil {
		s.replay.Close()
		s.replay = nil
	}
	if s.handle != nil {
		s.handle.Close()
		s.handle = nil
	}
	gate := ""
	if s.gate != nil {
		gate = s.gate.path
		if s.gate.handle != nil {
			s.gate.handle.Close()
			s.gate.handle = nil
		}
	}
	if s.adopted && !s.made {
		s.removed = true
		s.log.Info("service network released (adopted namespace left to its owner)", "netns", s.nsPath)
		return nil
	}
	if err := removeNamespace(ctx, s.nsPath, s.hostNetns, s.hostLink, gate, s.log); err != nil {
		return fmt.Errorf("remove service network %s: %w", s.name, err)
	}
	if err := os.Remove(recordPath(s.dir, s.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove service network %s: remove owner record: %w", s.name, err)
	}
	s.removed = true
	s.log.Info("service network removed", "netns", s.nsPath)
	return nil
}

// removeNamespace deletes every interface but loopback in the namespace at
// nsPath and in its gate namespace gatePath ("" if none; deleting a veth end
// deletes its peer, on the host too), deletes the host end hostLink if it
// somehow survived and carries our mark, and unmounts and removes the
// namespace files. Why delete the interfaces rather than just unmount: a
// process or socket still in the namespace keeps it alive, and its service
// interface must not outlive Remove.
func removeNamespace(ctx context.Context, nsPath, hostNetns, hostLink, gatePath string, log *slog.Logger) error {
	var errs []error
	for _, p := range []string{nsPath, gatePath} {
		if p != "" && isNsfsMount(p) {
			if err := deleteInterfaces(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if hostLink != "" {
		if err := deleteHostLink(hostNetns, hostLink, hostLinkAlias(nsPath)); err != nil {
			// The host namespace may be gone (crashed host); the
			// link went with it.
			log.Debug("host end of veth", "link", hostLink, "err", err)
		}
	}
	for _, p := range []string{nsPath, gatePath} {
		if p == "" {
			continue
		}
		if err := removeNetnsFile(p); err != nil {
			errs = append(errs, err)
		}
	}
	if gatePath != "" {
		// The gate directory goes with its last namespace (fails while
		// another one is in it).
		os.Remove(filepath.Dir(gatePath))
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func deleteInterfaces(nsPath string) error {
	h, err := handleAt(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list interfaces in %s: %w", nsPath, err)
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().Name == "lo" {
			continue
		}
		if err := h.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s in %s: %w", l.Attrs().Name, filepath.Base(nsPath), err))
		}
	}
	return errors.Join(errs...)
}

func deleteHostLink(hostNetns, name, alias string) error {
	h, err := handleAt(hostNetns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("find host end %s: %w", name, err)
	}
	if l.Type() != "veth" || l.Attrs().Alias != alias {
		return nil // same name, not ours
	}
	if err := h.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete host end %s: %w", name, err)
	}
	return nil
}

// isNotFound reports whether a netlink error means the link is gone.
func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV)
}
