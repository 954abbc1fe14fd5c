// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Settings is the network identity the container keeps across a failover:
// the same address and MAC on both hosts.
type Settings struct {
	Address *net.IPNet       // IP and prefix, e.g. 10.77.0.200/24
	MAC     net.HardwareAddr // nil: derived from Address
	Link    string           // host link or bridge the service interface attaches to
}

// ServiceIfName is the name of the service interface inside the container's
// network namespace.
const ServiceIfName = "eth0"

// DefaultGARPSchedule is when gratuitous ARP is sent after Promote, relative
// to the link coming up: at once for the switches and neighbours that are
// listening, and twice more for a frame lost while a bridge port or a
// neighbour's queue was still settling.
func DefaultGARPSchedule() []time.Duration {
	return []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond}
}

// Options are the settings of this package that do not belong to the
// replicated container's configuration.
type Options struct {
	// Dir holds the namespace bind mounts (one file per container, named
	// after it) and their owner records, e.g. <containerd state>/servicenet.
	// Required by Create; it is made if missing.
	Dir string
	// HostNetns is the path of the network namespace that holds the host
	// link; "" means the namespace of this process (the shim's).
	HostNetns string
	// GARPSchedule is when Promote sends gratuitous ARP, relative to the
	// link coming up; nil means DefaultGARPSchedule.
	GARPSchedule []time.Duration
	// Logger receives progress and cleanup messages; nil means slog.Default.
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

func (o Options) hostNetns() string {
	if o.HostNetns != "" {
		return o.HostNetns
	}
	return "/proc/self/ns/net"
}

func (o Options) garpSchedule() []time.Duration {
	if o.GARPSchedule != nil {
		return o.GARPSchedule
	}
	return DefaultGARPSchedule()
}

// maxGARPDelay bounds the schedule so that a typo cannot keep a goroutine
// announcing for hours.
const maxGARPDelay = 10 * time.Second

// recordSuffix ends the names of owner records in Dir; container names may
// not end with it.
const recordSuffix = ".owner.json"

// validateName checks that name can be a file name in Dir: container IDs
// are [A-Za-z0-9_.-] in containerd.
func validateName(name string) error {
	if name == "" || len(name) > 200 {
		return fmt.Errorf("name %q: must be 1-200 characters", name)
	}
	if name == "." || name == ".." || strings.HasPrefix(name, ".") {
		return fmt.Errorf("name %q: must not start with a dot", name)
	}
	if strings.HasSuffix(name, recordSuffix) {
		return fmt.Errorf("name %q: must not end with %s", name, recordSuffix)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("name %q: %q is not one of [A-Za-z0-9_.-]", name, c)
		}
	}
	return nil
}

// validateConfig checks a service network and returns its IPv4 address and
// the MAC to use (derived when cfg.MAC is nil).
func validateConfig(cfg Settings) (net.IP, net.HardwareAddr, error) {
	var errs []error
	var ip4 net.IP
	switch {
	case cfg.Address == nil:
		errs = append(errs, errors.New("service address: required"))
	case cfg.Address.IP.To4() == nil:
		// Takeover announces with ARP; IPv6 would need unsolicited
		// neighbour advertisements, which are not implemented.
		errs = append(errs, fmt.Errorf("service address %s: only IPv4 is supported", cfg.Address.IP))
	default:
		ip4 = cfg.Address.IP.To4()
		if ones, bits := cfg.Address.Mask.Size(); bits != 32 || ones == 0 {
			errs = append(errs, fmt.Errorf("service address %s: prefix length must be 1-32", cfg.Address))
		} else if ip4.IsUnspecified() || ip4.IsLoopback() || ip4.IsMulticast() || ip4.Equal(net.IPv4bcast) {
			errs = append(errs, fmt.Errorf("service address %s: not a unicast host address", ip4))
		}
	}
	mac := cfg.MAC
	if mac == nil && ip4 != nil {
		mac = DeriveMAC(ip4)
	}
	if cfg.MAC != nil {
		if err := validateMAC(cfg.MAC); err != nil {
			errs = append(errs, fmt.Errorf("service MAC %s: %w", cfg.MAC, err))
		}
	}
	if err := validateLinkName(cfg.Link); err != nil {
		errs = append(errs, fmt.Errorf("service link: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return ip4, mac, nil
}

func validateMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return errors.New("must be a 6-byte Ethernet address")
	}
	if mac[0]&1 != 0 {
		return errors.New("must be unicast (multicast bit set)")
	}
	if string(mac) == "\x00\x00\x00\x00\x00\x00" {
		return errors.New("must not be all zeros")
	}
	return nil
}

// validateLinkName checks an interface name as the kernel does (IFNAMSIZ).
func validateLinkName(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
}

func validateSchedule(s []time.Duration) error {
	for _, d := range s {
		if d < 0 || d > maxGARPDelay {
			return fmt.Errorf("GARP schedule: %s is outside [0, %s]", d, maxGARPDelay)
		}
	}
	return nil
}
