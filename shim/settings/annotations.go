// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package settings is what the shim reads and rrcctl shares: the io.rrc.*
// annotations of a container and the shim's configuration file.
package settings

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/wire"
	"github.com/iorrc/rrc/runtime/servicenet"
)

// RuntimeName is the runtime name containerd knows the shim by.
const RuntimeName = "io.rrc.v1"

// AnnotationPrefix starts every annotation io.rrc.v1 reads.
const AnnotationPrefix = "io.rrc."

// AnnotationProtect, on a task update (rrcctl protect, containerd's
// Tasks.Update) rather than at create, asks a backup that took over at a
// failover to protect the container it restored with a new backup at the
// address it names.
const AnnotationProtect = AnnotationPrefix + "protect"

// AnnotationError names the annotation that is wrong and why.
type AnnotationError struct {
	Key   string
	Value string
	Msg   string
}

func (e *AnnotationError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("annotation %s: %s", e.Key, e.Msg)
	}
	return fmt.Sprintf("annotation %s=%q: %s", e.Key, e.Value, e.Msg)
}

func annotationKey(f replication.Field) string { return AnnotationPrefix + string(f) }

// annotation describes one io.rrc.* annotation.
type annotation struct {
	field replication.Field
	def   string
	doc   string
	parse func(cfg *replication.Config, v string) error
}

// annotationTable lists every annotation io.rrc.v1 reads. It is built per
// call so that no package-level state exists.
func annotationTable() []annotation {
	return []annotation{
		{replication.FieldRole, "(none: not replicated)", "primary or backup", func(c *replication.Config, v string) error {
			c.Role = replication.Role(v)
			return nil
		}},
		{replication.FieldPair, "container ID", "name of the replicated pair, the same on both hosts", func(c *replication.Config, v string) error {
			if err := wire.CheckPairName(v); err != nil {
				return err
			}
			c.Pair = v
			return nil
		}},
		{replication.FieldPeer, "(required on the primary)", "host:port of the backup's shim", func(c *replication.Config, v string) error {
			c.Peer = v
			return checkHostPort(v)
		}},
		{replication.FieldListen, "(required on the backup)", "host:port the backup's shim listens on", func(c *replication.Config, v string) error {
			c.Listen = v
			return checkHostPort(v)
		}},
		{replication.FieldPeerName, "host of io.rrc.peer (primary); required on the backup", "name the peer's TLS certificate must carry (DNS or IP SAN)", func(c *replication.Config, v string) error {
			if _, err := netip.ParseAddr(v); err != nil && !validHostname(v) {
				return errors.New("neither an IP address nor a host name")
			}
			c.PeerName = v
			return nil
		}},
		{replication.FieldMode, string(replication.DefaultMode), "epoch (checkpoint per epoch) or hybrid (checkpoints plus input log)", func(c *replication.Config, v string) error {
			c.Mode = replication.Mode(v)
			return nil
		}},
		{replication.FieldEpoch, fmt.Sprintf("%s (hybrid: %s)", replication.DefaultEpoch, replication.DefaultHybridEpoch), fmt.Sprintf("time between checkpoints, %s to %s", replication.MinEpoch, replication.MaxEpoch), func(c *replication.Config, v string) (err error) {
			c.Epoch, err = parseDuration(v)
			return err
		}},
		{replication.FieldHeartbeat, replication.DefaultHeartbeat.String(), "interval of heartbeats between the shims", func(c *replication.Config, v string) (err error) {
			c.Heartbeat, err = parseDuration(v)
			return err
		}},
		{replication.FieldHeartbeatMisses, fmt.Sprint(replication.DefaultHeartbeatMisses), "heartbeats missed before the peer is declared failed", func(c *replication.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("not a whole number")
			}
			c.HeartbeatMisses = n
			if n < 1 {
				return errors.New("must be at least 1")
			}
			return nil
		}},
		{replication.FieldAckTimeout, replication.DefaultAckTimeout.String(), fmt.Sprintf("an acknowledgement from the backup outstanding longer than this is a backup failure, %s to %s", replication.MinAckTimeout, replication.MaxAckTimeout), func(c *replication.Config, v string) (err error) {
			c.AckTimeout, err = parseDuration(v)
			return err
		}},
		{replication.FieldFailingAfterFailures, fmt.Sprint(replication.DefaultFailingAfterFailures), "failed checkpoints in a row (none acknowledged) before the primary goes failing", func(c *replication.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("not a whole number")
			}
			c.FailingAfterFailures = n
			if n < 1 {
				return errors.New("must be at least 1")
			}
			return nil
		}},
		{replication.FieldFailingAfter, replication.DefaultFailingAfter.String(), fmt.Sprintf("how long failed checkpoints may go on in a row before the primary goes failing, %s to %s", replication.MinFailingAfter, replication.MaxFailingAfter), func(c *replication.Config, v string) (err error) {
			c.FailingAfter, err = parseDuration(v)
			return err
		}},
		{replication.FieldSkipIdle, fmt.Sprint(replication.DefaultSkipIdle), "true: a tick takes no checkpoint while no packet has entered or left the container since the last committed one; false: every tick takes one", func(c *replication.Config, v string) error {
			switch v {
			case "true":
				c.SkipIdle = true
			case "false":
				c.SkipIdle = false
			default:
				return errors.New(`neither "true" nor "false"`)
			}
			return nil
		}},
		{replication.FieldServiceIP, "(none: the container's own network)", "service address with prefix, kept across failover, e.g. 10.77.0.200/24", func(c *replication.Config, v string) error {
			ip, ipnet, err := net.ParseCIDR(v)
			if err != nil {
				return errors.New("not an address with prefix length, e.g. 10.77.0.200/24")
			}
			ipnet.IP = ip
			service(c).Address = ipnet
			return nil
		}},
		{replication.FieldServiceMAC, "derived from the service address", "MAC of the service interface, the same on both hosts", func(c *replication.Config, v string) error {
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return errors.New("not an Ethernet MAC address, e.g. 02:00:0a:4d:00:c8")
			}
			if mac[0]&1 == 1 {
				return errors.New("is a multicast address")
			}
			service(c).MAC = mac
			return nil
		}},
		{replication.FieldServiceLink, "(required with service-ip)", "host link or bridge the service interface attaches to", func(c *replication.Config, v string) error {
			if len(v) == 0 || len(v) > 15 || strings.ContainsAny(v, "/ \t\n:") {
				return errors.New("not a network interface name")
			}
			service(c).Link = v
			return nil
		}},
	}
}

// AnnotationDoc documents one annotation for operators.
type AnnotationDoc struct{ Key, Default, Doc string }

// Annotations lists the annotations io.rrc.v1 reads, in a stable order.
func Annotations() []AnnotationDoc {
	var out []AnnotationDoc
	for _, a := range annotationTable() {
		out = append(out, AnnotationDoc{Key: annotationKey(a.field), Default: a.def, Doc: a.doc})
	}
	return out
}

func service(c *replication.Config) *servicenet.Settings {
	if c.Service == nil {
		c.Service = &servicenet.Settings{}
	}
	return c.Service
}

// criContainerType is the annotation containerd's CRI plugin puts on every
// spec it makes: "sandbox" for a pod's pause container, "container" for the
// others (containerd's internal/cri/annotations.ContainerType).
const criContainerType = "io.kubernetes.cri.container-type"

// IsCRISandbox reports whether a spec with these annotations is a CRI pod's
// sandbox (pause) container. It holds the pod's namespaces and runs nothing
// to replicate; its io.rrc.* annotations, if any, are the pod's (CRI's
// pod_annotations), meant for the pod's containers, which the shim
// replicates in the sandbox's network namespace.
func IsCRISandbox(annotations map[string]string) bool {
	return annotations[criContainerType] == "sandbox"
}

// ParseAnnotations reads the io.rrc.* annotations of an OCI spec. It returns
// a nil Config when the container carries none: the shim then behaves exactly
// like io.containerd.runc.v2. Every error names the annotation at fault.
func ParseAnnotations(id string, annotations map[string]string) (*replication.Config, error) {
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	sort.Strings(keys)

	fields := map[string]annotation{}
	for _, a := range annotationTable() {
		fields[annotationKey(a.field)] = a
	}
	cfg := replication.Config{SkipIdle: replication.DefaultSkipIdle}
	var errs []error
	reported := map[string]bool{}
	for _, k := range keys {
		v := annotations[k]
		a, ok := fields[k]
		if !ok {
			errs = append(errs, &AnnotationError{Key: k, Value: v, Msg: "unknown annotation; known: " + strings.Join(knownAnnotations(), ", ")})
			continue
		}
		if err := a.parse(&cfg, v); err != nil {
			errs = append(errs, &AnnotationError{Key: k, Value: v, Msg: err.Error()})
			reported[k] = true
		}
	}
	if cfg.Pair == "" {
		cfg.Pair = id
		if err := wire.CheckPairName(id); err != nil {
			k := annotationKey(replication.FieldPair)
			errs = append(errs, &AnnotationError{Key: k, Msg: fmt.Sprintf("not set, and the container ID %q it defaults to is not a DNS label (lower-case letters, digits, '-', at most %d): set it", id, wire.MaxPairLen)})
			reported[k] = true
		}
	}
	cfg = cfg.WithDefaults()
	// Report what does not fit together too, but only once per annotation.
	if err := cfg.Validate(); err != nil {
		for _, e := range unjoin(err) {
			var fe *replication.FieldError
			if !errors.As(e, &fe) {
				errs = append(errs, e)
				continue
			}
			if k := annotationKey(fe.Field); !reported[k] {
				errs = append(errs, &AnnotationError{Key: k, Value: annotations[k], Msg: fe.Msg})
			}
		}
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return &cfg, nil
}

// joinedError keeps several problems on one line, as ctr prints one line.
type joinedError []error

func (j joinedError) Error() string {
	msgs := make([]string, len(j))
	for i, e := range j {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

func (j joinedError) Unwrap() []error { return j }

func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return joinedError(errs)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func knownAnnotations() []string {
	var out []string
	for _, a := range Annotations() {
		out = append(out, a.Key)
	}
	return out
}

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("not host:port")
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not in 1-65535", port)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// parseDuration accepts Go durations ("100ms", "1.5s"); a bare number is
// refused because its unit would be a guess.
func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		if _, nerr := strconv.ParseFloat(v, 64); nerr == nil {
			return 0, errors.New("needs a unit, e.g. 100ms or 2s")
		}
		return 0, errors.New("not a duration, e.g. 100ms or 2s")
	}
	if d <= 0 {
		return 0, errors.New("must be positive")
	}
	return d, nil
}
