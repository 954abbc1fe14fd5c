// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PromoteTimings says how long the steps of Promote took, each measured
// from the start of Promote.
type PromoteTimings struct {
	LinkUp    time.Duration // every service interface (and veth host end) up
	Running   time.Duration // carrier on every service interface (IFF_RUNNING)
	FirstGARP time.Duration // first announcement (request and reply) sent; 0 if it failed
}

// carrierWait bounds how long Promote waits for carrier before it
// announces anyway: a frame sent without carrier is dropped, and the later
// announcements of the schedule may still get through.
const carrierWait = 200 * time.Millisecond

// Promote brings the service interfaces up (the host end of a veth first,
// so that the path exists when eth0 comes up) and announces every IPv4
// address on them with gratuitous ARP, at once and then on the rest of the
// schedule in the background (Remove stops it). Calling it again
// re-announces.
func (s *ServiceNetwork) Promote(ctx context.Context) (PromoteTimings, error) {
	var t PromoteTimings
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return t, fmt.Errorf("promote service network %s: removed", s.name)
	}
	if err := ctx.Err(); err != nil {
		return t, fmt.Errorf("promote service network %s: %w", s.name, err)
	}
	// The host end of a veth: up first, and waited for below, because
	// the bridge forwards from the port only once the kernel has noticed
	// its carrier (linkwatch, asynchronous); a GARP sent before that is
	// dropped at the port.
	var host *hostEnd
	if s.hostLink != "" {
		var err error
		if host, err = setHostLinkUp(s.hostNetns, s.hostLink); err != nil {
			return t, fmt.Errorf("promote service network %s: %w", s.name, err)
		}
		defer host.handle.Close()
	}
	if s.gate != nil {
		if err := s.gate.setUp(GateInnerIf, s.gate.inner); err != nil {
			return t, fmt.Errorf("promote service network %s: %w", s.name, err)
		}
	}
	for _, l := range s.links {
		if err := s.handle.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: l.index}}); err != nil {
			return t, fmt.Errorf("promote service network %s: set %s up: %w", s.name, l.name, err)
		}
	}
	if s.gate != nil {
		// The route to the container first: a client's packet that
		// arrives as soon as the uplink is up must find it.
		rs := s.gate.routes()
		if err := s.gate.handle.RouteReplace(&rs[0]); err != nil {
			return t, fmt.Errorf("promote service network %s: gate route %s: %w", s.name, rs[0].Dst, err)
		}
		if err := s.gate.setUp(GateUplinkIf, s.gate.uplink); err != nil {
			return t, fmt.Errorf("promote service network %s: %w", s.name, err)
		}
		if err := s.gate.handle.RouteReplace(&rs[1]); err != nil {
			return t, fmt.Errorf("promote service network %s: gate route %s: %w", s.name, rs[1].Dst, err)
		}
		// InnerUp's route through lo, if any, has served its purpose.
		if rr, err := s.gate.restoreRoute(); err == nil {
			if err := s.gate.handle.RouteDel(&rr); err != nil && !errors.Is(err, unix.ESRCH) {
				s.log.Warn("gate restore route not removed", "err", err)
			}
		}
	}
	for _, l := range s.links {
		for _, r := range l.routes {
			// Best effort: the link is up, which the clients of its own
			// subnet need; the failover goes on without this route.
			if err := s.handle.RouteReplace(&r); err != nil {
				s.log.Warn("route of the adopted namespace not restored", "link", l.name, "route", r.String(), "err", err)
			}
		}
	}
	s.standby = false
	t.LinkUp = time.Since(start)
	if err := s.waitRunning(ctx, host, start.Add(t.LinkUp+carrierWait)); err != nil {
		s.log.Warn("service interface has no carrier; announcing anyway", "err", err)
	}
	t.Running = time.Since(start)

	var announcers []*announcer
	for _, l := range s.links {
		announcers = append(announcers, l.announcer...)
	}
	if err := announceFirst(ctx, announcers, start.Add(t.Running+carrierWait)); err != nil {
		// Best effort: the link is up, which is what promotion needs;
		// the rest of the schedule may still get through.
		s.log.Warn("first gratuitous ARP failed", "err", err)
	} else {
		t.FirstGARP = time.Since(start)
	}
	s.announceLater(announcers, start.Add(t.LinkUp))
	s.log.Info("service network promoted", "link_up", t.LinkUp, "running", t.Running, "first_garp", t.FirstGARP)
	return t, nil
}

// announceFirst sends the first announcement on every announcer, retrying
// until deadline while the kernel refuses it: a device whose carrier was
// just noticed gets its real queueing discipline a moment later, and until
// then every frame is dropped (ENOBUFS).
func announceFirst(ctx context.Context, announcers []*announcer, deadline time.Time) error {
	pending := announcers
	for {
		var failed []*announcer
		var errs []error
		for _, a := range pending {
			if err := a.announce(); err != nil {
				failed = append(failed, a)
				errs = append(errs, err)
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		pending = failed
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-time.After(time.Millisecond):
		}
	}
}

// waitRunning polls until every service interface, and the host end of a
// veth if any, has carrier (IFF_RUNNING), or deadline.
func (s *ServiceNetwork) waitRunning(ctx context.Context, host *hostEnd, deadline time.Time) error {
	for {
		var notRunning []string
		for _, l := range s.links {
			link, err := s.handle.LinkByIndex(l.index)
			if err != nil {
				return fmt.Errorf("read state of %s: %w", l.name, err)
			}
			if link.Attrs().RawFlags&unix.IFF_RUNNING == 0 {
				notRunning = append(notRunning, l.name)
			}
		}
		if s.gate != nil {
			for _, gl := range []struct {
				name  string
				index int
			}{{GateInnerIf, s.gate.inner}, {GateUplinkIf, s.gate.uplink}} {
				link, err := s.gate.handle.LinkByIndex(gl.index)
				if err != nil {
					return fmt.Errorf("read state of gate link %s: %w", gl.name, err)
				}
				if link.Attrs().RawFlags&unix.IFF_RUNNING == 0 {
					notRunning = append(notRunning, gl.name)
				}
			}
		}
		if host != nil {
			link, err := host.handle.LinkByIndex(host.index)
			if err != nil {
				return fmt.Errorf("read state of host end %s: %w", s.hostLink, err)
			}
			if link.Attrs().RawFlags&unix.IFF_RUNNING == 0 {
				notRunning = append(notRunning, s.hostLink)
			}
		}
		if len(notRunning) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v not running after %s", notRunning, carrierWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// announceLater sends the rest of the schedule (delays after up) in a
// goroutine that Remove or a new Promote stops. The sockets stay open
// until Remove, which waits for the goroutine first.
func (s *ServiceNetwork) announceLater(announcers []*announcer, up time.Time) {
	s.stopAnnouncing()
	var later []time.Duration
	for _, d := range s.opts.garpSchedule() {
		if d > 0 {
			later = append(later, d)
		}
	}
	if len(later) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stopGARP, s.garpDone = cancel, done
	go func() {
		defer close(done)
		for _, d := range later {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(up.Add(d))):
			}
			for _, a := range announcers {
				if err := a.announce(); err != nil {
					s.log.Warn("gratuitous ARP", "err", err)
				}
			}
		}
	}()
}

// stopAnnouncing stops the background announcements and waits for them.
// Callers hold s.mu.
func (s *ServiceNetwork) stopAnnouncing() {
	if s.stopGARP != nil {
		s.stopGARP()
		<-s.garpDone
		s.stopGARP, s.garpDone = nil, nil
	}
}

// hostEnd is the host end of a veth pair during Promote.
type hostEnd struct {
	handle *netlink.Handle // bound to the host namespace; the caller closes it
	index  int
}

func setHostLinkUp(hostNetns, name string) (*hostEnd, error) {
	h, err := handleAt(hostNetns)
	if err != nil {
		return nil, err
	}
	l, err := h.LinkByName(name)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("find host end %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		h.Close()
		return nil, fmt.Errorf("set host end %s up: %w", name, err)
	}
	return &hostEnd{handle: h, index: l.Attrs().Index}, nil
}

func (g *gateNS) setUp(name string, index int) error {
	if err := g.handle.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}); err != nil {
		return fmt.Errorf("set gate link %s up: %w", name, err)
	}
	return nil
}
