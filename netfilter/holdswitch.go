// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// HoldGroup is the device group that makes the gate namespace queue the
// container's input (ForwardRules.HoldGroup): a hold moves the uplink into
// it and back out. The rule never changes, so switching is one netlink
// request instead of an iptables run.
const HoldGroup = 0x5252

// HoldSwitch turns the queueing of inbound packets on and off for a hold
// that queues them only while it holds (NewSwitchedInputHold).
type HoldSwitch interface {
	Set(on bool) error
	Close() error
}

// devGroupSwitch moves a link into HoldGroup and back to the default group.
type devGroupSwitch struct {
	h    *netlink.Handle
	link netlink.Link
}

// NewDevGroupSwitch switches the queueing of what enters through ifname in
// the namespace netns; the link starts out of the group (not queueing).
func NewDevGroupSwitch(netnsPath, ifname string) (HoldSwitch, error) {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("input hold switch: open %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("input hold switch: netlink in %s: %w", netnsPath, err)
	}
	link, err := h.LinkByName(ifname)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("input hold switch: link %s: %w", ifname, err)
	}
	s := &devGroupSwitch{h: h, link: link}
	if err := s.Set(false); err != nil {
		h.Close()
		return nil, err
	}
	return s, nil
}

func (s *devGroupSwitch) Set(on bool) error {
	g := 0
	if on {
		g = HoldGroup
	}
	if err := s.h.LinkSetGroup(s.link, g); err != nil {
		return fmt.Errorf("input hold switch: %s into group %#x: %w", s.link.Attrs().Name, g, err)
	}
	return nil
}

func (s *devGroupSwitch) Close() error {
	s.h.Close()
	return nil
}
