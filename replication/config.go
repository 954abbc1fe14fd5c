// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package replication is the replication engine of io.rrc.v1: the epoch loop,
// the peer protocol, the checkpoint store on the backup, heartbeats, failure
// detection and promotion. It knows nothing of containerd.
package replication

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/iorrc/rrc/replication/wire"
	"github.com/iorrc/rrc/runtime/servicenet"
)

// Role is the part a shim plays in a replicated pair.
type Role string

const (
	RolePrimary Role = "primary"
	RoleBackup  Role = "backup"
)

// Mode selects how the primary makes its output safe to release.
type Mode string

const (
	// ModeEpoch releases output when the backup holds the checkpoint of the
	// epoch that produced it (NiLiCon/Remus).
	ModeEpoch Mode = "epoch"
	// ModeHybrid releases output when the backup holds the input log up to
	// it (RRC).
	ModeHybrid Mode = "hybrid"
)

// wire is the mode as the peer protocol names it.
func (m Mode) wire() wire.Mode {
	if m == ModeHybrid {
		return wire.ModeHybrid
	}
	return wire.ModeEpoch
}

// Defaults of the settings a container may leave out.
const (
	DefaultMode  = ModeEpoch
	DefaultEpoch = 100 * time.Millisecond
	// DefaultHybridEpoch is hybrid mode's checkpoint interval: its output
	// no longer waits for checkpoints, whose pauses are then most of what
	// a reply's tail and the throughput pay, while the log a failover
	// replays grows with it (measured: docs/HYBRID.md, "The checkpoint
	// interval").
	DefaultHybridEpoch     = time.Second
	DefaultHeartbeat       = 30 * time.Millisecond
	DefaultHeartbeatMisses = 3
	// DefaultAckTimeout bounds how long an acknowledgement may stay
	// outstanding while the backup's heartbeats still come (its reader or
	// disk stuck). It must cover a full checkpoint's transfer and commit
	// (the first, and the one after a re-pairing: 5 s is about 600 MB at
	// 1 Gbit/s) and a loaded 2-core host's scheduling gaps (up to 1.5 s
	// seen, docs/PEER-PROTOCOL.md).
	DefaultAckTimeout  = 5 * time.Second
	MinAckTimeout      = 100 * time.Millisecond
	MaxAckTimeout      = time.Hour
	MinEpoch           = 5 * time.Millisecond
	MaxEpoch           = 60 * time.Second
	MinHeartbeat       = time.Millisecond
	MaxHeartbeat       = 10 * time.Second
	MaxHeartbeatMisses = 1000
	// A primary whose checkpoints keep failing (output held, nothing
	// committed) goes failing after DefaultFailingAfterFailures
	// consecutive failures, or once they have gone on for
	// DefaultFailingAfter: 1 s of failures at the default epoch, and a
	// bound in time for long epochs (hybrid mode's 1 s).
	// DefaultSkipIdle is io.rrc.skip-idle's default in the shim (the
	// zero Config takes every tick's checkpoint): an idle container costs
	// next to nothing (docs/ENGINE.md, "Idle ticks").
	DefaultSkipIdle             = true
	DefaultFailingAfterFailures = 10
	DefaultFailingAfter         = 5 * time.Second
	MaxFailingAfterFailures     = 1_000_000
	MinFailingAfter             = 10 * time.Millisecond
	MaxFailingAfter             = time.Hour
)

// Config is what one shim needs to replicate one container.
type Config struct {
	Role            Role
	Pair            string // identifies the pair on both hosts; defaults to the container ID
	Peer            string // host:port of the peer shim (primary dials it)
	Listen          string // host:port this shim listens on (backup)
	Mode            Mode
	Epoch           time.Duration
	Heartbeat       time.Duration
	HeartbeatMisses int
	// AckTimeout (primary): an acknowledgement — of a checkpoint, or in
	// hybrid mode of the input log — outstanding longer than this is a
	// failure of the backup, as its silence would be.
	AckTimeout time.Duration
	// FailingAfterFailures and FailingAfter bound a run of failed
	// checkpoints (failed or refused by the backup, none acknowledged in
	// between) before the primary goes failing: that many, or for that
	// long since the first of them.
	FailingAfterFailures int
	FailingAfter         time.Duration
	// SkipIdle (primary): a tick takes no checkpoint when no packet has
	// entered or left the container since the last one, which the backup
	// has committed: no client can tell that state from the container's
	// since, so it needs no copy (docs/ENGINE.md, "Idle ticks").
	SkipIdle bool
	Service  *servicenet.Settings // nil: the container's own network namespace is used as is
	// Image is the digest of the image the container runs, "" for none (a
	// root file system of its own); the peer must run the same (the shim
	// asks containerd, not an annotation).
	Image string

	// PeerName is the identity the peer's TLS certificate must carry (a DNS
	// or IP SAN). Empty on the primary: the host of Peer. The backup needs it
	// set, or it cannot tell its primary from any other holder of a
	// certificate of the cluster's CA (see ExpectedPeerName).
	PeerName string
}

// Enabled reports whether the container is replicated at all.
func (c *Config) Enabled() bool { return c != nil && c.Role != "" }

// ExpectedPeerName is the identity the peer's certificate must carry:
// PeerName, or on the primary the host part of Peer. Empty means unknown; the
// peer channel refuses to run without it.
func (c *Config) ExpectedPeerName() string {
	if c.PeerName != "" || c.Role != RolePrimary {
		return c.PeerName
	}
	host, _, err := net.SplitHostPort(c.Peer)
	if err != nil {
		return ""
	}
	return host
}

// WithDefaults fills in the settings left out.
func (c Config) WithDefaults() Config {
	if c.Mode == "" {
		c.Mode = DefaultMode
	}
	if c.Epoch == 0 {
		c.Epoch = DefaultEpoch
		if c.Mode == ModeHybrid {
			c.Epoch = DefaultHybridEpoch
		}
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.HeartbeatMisses == 0 {
		c.HeartbeatMisses = DefaultHeartbeatMisses
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.FailingAfterFailures == 0 {
		c.FailingAfterFailures = DefaultFailingAfterFailures
	}
	if c.FailingAfter == 0 {
		c.FailingAfter = DefaultFailingAfter
	}
	return c
}

// Validate checks that the settings fit together. Field errors name the
// setting so that callers can map them back to where they came from.
func (c *Config) Validate() error {
	var errs []error
	switch c.Role {
	case RolePrimary:
		if c.Peer == "" {
			errs = append(errs, &FieldError{Field: FieldPeer, Msg: "required for the primary"})
		}
	case RoleBackup:
		if c.Listen == "" {
			errs = append(errs, &FieldError{Field: FieldListen, Msg: "required for the backup"})
		}
		if c.PeerName == "" {
			errs = append(errs, &FieldError{Field: FieldPeerName, Msg: "required for the backup: the name the primary's certificate carries"})
		}
	default:
		errs = append(errs, &FieldError{Field: FieldRole, Msg: fmt.Sprintf("%q is not one of primary, backup", c.Role)})
	}
	switch c.Mode {
	case ModeEpoch, ModeHybrid:
	default:
		errs = append(errs, &FieldError{Field: FieldMode, Msg: fmt.Sprintf("%q is not one of epoch, hybrid", c.Mode)})
	}
	if err := wire.CheckPairName(c.Pair); err != nil {
		errs = append(errs, &FieldError{Field: FieldPair, Msg: err.Error()})
	}
	if c.Epoch < MinEpoch || c.Epoch > MaxEpoch {
		errs = append(errs, &FieldError{Field: FieldEpoch, Msg: fmt.Sprintf("%s is outside [%s, %s]", c.Epoch, MinEpoch, MaxEpoch)})
	}
	if c.Heartbeat < MinHeartbeat || c.Heartbeat > MaxHeartbeat {
		errs = append(errs, &FieldError{Field: FieldHeartbeat, Msg: fmt.Sprintf("%s is outside [%s, %s]", c.Heartbeat, MinHeartbeat, MaxHeartbeat)})
	}
	if c.HeartbeatMisses < 1 || c.HeartbeatMisses > MaxHeartbeatMisses {
		errs = append(errs, &FieldError{Field: FieldHeartbeatMisses, Msg: fmt.Sprintf("%d is outside [1, %d]", c.HeartbeatMisses, MaxHeartbeatMisses)})
	}
	if c.AckTimeout < MinAckTimeout || c.AckTimeout > MaxAckTimeout {
		errs = append(errs, &FieldError{Field: FieldAckTimeout, Msg: fmt.Sprintf("%s is outside [%s, %s]", c.AckTimeout, MinAckTimeout, MaxAckTimeout)})
	}
	if c.FailingAfterFailures < 1 || c.FailingAfterFailures > MaxFailingAfterFailures {
		errs = append(errs, &FieldError{Field: FieldFailingAfterFailures, Msg: fmt.Sprintf("%d is outside [1, %d]", c.FailingAfterFailures, MaxFailingAfterFailures)})
	}
	if c.FailingAfter < MinFailingAfter || c.FailingAfter > MaxFailingAfter {
		errs = append(errs, &FieldError{Field: FieldFailingAfter, Msg: fmt.Sprintf("%s is outside [%s, %s]", c.FailingAfter, MinFailingAfter, MaxFailingAfter)})
	}
	if c.Service != nil {
		if c.Service.Address == nil {
			errs = append(errs, &FieldError{Field: FieldServiceIP, Msg: "required with a service network"})
		}
		if c.Service.Link == "" {
			errs = append(errs, &FieldError{Field: FieldServiceLink, Msg: "required with a service address"})
		}
	}
	return errors.Join(errs...)
}

// Field names a setting of Config.
type Field string

const (
	FieldRole                 Field = "role"
	FieldPair                 Field = "pair"
	FieldPeer                 Field = "peer"
	FieldListen               Field = "listen"
	FieldMode                 Field = "mode"
	FieldEpoch                Field = "epoch"
	FieldHeartbeat            Field = "heartbeat"
	FieldHeartbeatMisses      Field = "heartbeat-misses"
	FieldAckTimeout           Field = "ack-timeout"
	FieldFailingAfterFailures Field = "failing-after-failures"
	FieldFailingAfter         Field = "failing-after"
	FieldSkipIdle             Field = "skip-idle"
	FieldServiceIP            Field = "service-ip"
	FieldServiceMAC           Field = "service-mac"
	FieldServiceLink          Field = "service-link"
	FieldPeerName             Field = "peer-name"
)

// FieldError is a problem with one setting.
type FieldError struct {
	Field Field
	Msg   string
}

func (e *FieldError) Error() string { return string(e.Field) + ": " + e.Msg }
