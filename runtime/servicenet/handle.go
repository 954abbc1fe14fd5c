package servicenet

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// handleAt opens a netlink handle bound to the namespace at path.
func handleAt(path string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", path, err)
	}
	return h, nil
}

// openHandle binds s.handle to the container's namespace. The handle's
// socket holds a reference to the namespace until Remove closes it.
func (s *ServiceNetwork) openHandle() error {
	h, err := handleAt(s.nsPath)
	if err != nil {
		return err
	}
	s.handle = h
	return nil
}

// setLoopbackUp: a new namespace's lo is down, and services that talk to
// themselves over 127.0.0.1 expect it up.
func (s *ServiceNetwork) setLoopbackUp() error {
	lo, err := s.handle.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := s.handle.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}
