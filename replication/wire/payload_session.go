// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Role is the part the sender of a Hello plays.
type Role uint8

const (
	RolePrimary Role = 1
	RoleBackup  Role = 2
)

func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleBackup:
		return "backup"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Mode is the replication mode a side runs; both sides must agree.
type Mode uint8

const (
	ModeEpoch  Mode = 1
	ModeHybrid Mode = 2
)

func (m Mode) String() string {
	switch m {
	case ModeEpoch:
		return "epoch"
	case ModeHybrid:
		return "hybrid"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Hello opens a session in both directions. The header's epoch is the
// sender's last committed epoch (backup) or last acknowledged epoch
// (primary), which is where a resync starts.
type Hello struct {
	MinVersion, MaxVersion uint8
	Role                   Role
	Mode                   Mode
	// Heartbeat is the interval at which the sender promises heartbeats;
	// the other side's failure detector waits for this interval.
	Heartbeat time.Duration
	Pair      string
	// Image is the digest of the image the sender's container runs
	// ("sha256:…"), empty when it has none (a root file system given as is):
	// the two sides must run the same.
	Image string
}

// MaxImageLen bounds the image digest (an OCI digest: algorithm:encoded).
const MaxImageLen = 160

// CheckImageDigest says why d is not an OCI digest (empty is allowed).
func CheckImageDigest(d string) error {
	if d == "" {
		return nil
	}
	alg, enc, ok := strings.Cut(d, ":")
	if !ok || alg == "" || enc == "" || len(d) > MaxImageLen {
		return fmt.Errorf("image digest %q: want algorithm:encoded, at most %d characters", d, MaxImageLen)
	}
	for _, c := range []byte(d) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":+._-=", c) >= 0) {
			return fmt.Errorf("image digest %q: character %q", d, c)
		}
	}
	return nil
}

// MaxPairLen bounds the pair name (a DNS label).
const MaxPairLen = 63

// CheckPairName says why name cannot name a pair: it must be a DNS label
// (RFC 1123: 1 to 63 lower-case letters, digits and '-', not starting or
// ending with '-'). It names directories on both hosts (a backup's store),
// so nothing like "." or ".." or a '/' may get through.
func CheckPairName(name string) error {
	if name == "" || len(name) > MaxPairLen {
		return fmt.Errorf("pair name %q: must have 1 to %d characters", name, MaxPairLen)
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("pair name %q: must not start or end with '-'", name)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("pair name %q: must be a DNS label (lower-case letters, digits, '-'), has %q", name, c)
		}
	}
	return nil
}

func (h Hello) Append(dst []byte) []byte {
	dst = append(dst, h.MinVersion, h.MaxVersion, byte(h.Role), byte(h.Mode))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Heartbeat))
	dst = appendStr(dst, h.Pair)
	return appendStr(dst, h.Image)
}

func DecodeHello(b []byte) (Hello, error) {
	d := decoder{what: "Hello", b: b}
	h := Hello{MinVersion: d.u8("min version"), MaxVersion: d.u8("max version"), Role: Role(d.u8("role")), Mode: Mode(d.u8("mode"))}
	hb := d.u64("heartbeat")
	h.Pair = d.str("pair", MaxPairLen)
	h.Image = d.str("image", MaxImageLen)
	if err := d.done(); err != nil {
		return Hello{}, err
	}
	switch {
	case h.MinVersion == 0 || h.MinVersion > h.MaxVersion:
		d.fail("version range [%d, %d]", h.MinVersion, h.MaxVersion)
	case h.Role != RolePrimary && h.Role != RoleBackup:
		d.fail("role %d", uint8(h.Role))
	case h.Mode != ModeEpoch && h.Mode != ModeHybrid:
		d.fail("mode %d", uint8(h.Mode))
	case hb == 0 || hb > uint64(time.Hour):
		d.fail("heartbeat %dns", hb)
	case CheckPairName(h.Pair) != nil:
		d.fail("%v", CheckPairName(h.Pair))
	case CheckImageDigest(h.Image) != nil:
		d.fail("%v", CheckImageDigest(h.Image))
	}
	h.Heartbeat = time.Duration(hb)
	return h, d.err
}

// Heartbeat flows in both directions at the sender's interval. The header's
// epoch is the sender's latest epoch (primary: latest sent; backup: latest
// committed). Echo is the SentAt of the last heartbeat the sender received,
// so that each side can estimate the round-trip time.
type Heartbeat struct {
	SentAt time.Time
	Echo   time.Time
}

func (h Heartbeat) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(unixNano(h.SentAt)))
	return binary.BigEndian.AppendUint64(dst, uint64(unixNano(h.Echo)))
}

func DecodeHeartbeat(b []byte) (Heartbeat, error) {
	d := decoder{what: "Heartbeat", b: b}
	sent, echo := int64(d.u64("sent at")), int64(d.u64("echo"))
	if err := d.done(); err != nil {
		return Heartbeat{}, err
	}
	if sent <= 0 || echo < 0 {
		d.fail("times %d, %d", sent, echo)
		return Heartbeat{}, d.err
	}
	return Heartbeat{SentAt: fromUnixNano(sent), Echo: fromUnixNano(echo)}, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Ack says that the checkpoint of the header's epoch is committed on the
// backup. Digest echoes the digest that was verified, so the primary knows
// the backup holds exactly what it sent.
type Ack struct {
	Digest [32]byte
}

func (a Ack) Append(dst []byte) []byte { return append(dst, a.Digest[:]...) }

func DecodeAck(b []byte) (Ack, error) {
	d := decoder{what: "Ack", b: b}
	var a Ack
	copy(a.Digest[:], d.take(32, "digest"))
	return a, d.done()
}

// ErrorCode classifies an Error frame.
type ErrorCode uint16

const (
	CodeProtocol    ErrorCode = 1 // a frame broke the protocol; the connection closes
	CodeVersion     ErrorCode = 2 // no common protocol version
	CodePair        ErrorCode = 3 // wrong pair, role or mode
	CodeEpochOrder  ErrorCode = 4 // checkpoint epoch not above the last committed one
	CodeCorrupt     ErrorCode = 5 // size or digest mismatch: checkpoint rejected
	CodeBaseMissing ErrorCode = 6 // incremental checkpoint whose base is not held
	CodeStorage     ErrorCode = 7 // the backup could not store the checkpoint
	CodeUnsupported ErrorCode = 8 // a frame type this side does not handle (yet)
	CodeAborted     ErrorCode = 9 // the transfer was aborted
	// CodeSuperseded: the backup declared the primary failed and takes
	// over; a primary that reads it is alive after all and must stop.
	CodeSuperseded ErrorCode = 10
)

var codeNames = map[ErrorCode]string{
	CodeProtocol: "protocol", CodeVersion: "version", CodePair: "pair",
	CodeEpochOrder: "epoch-order", CodeCorrupt: "corrupt", CodeBaseMissing: "base-missing",
	CodeStorage: "storage", CodeUnsupported: "unsupported", CodeAborted: "aborted",
	CodeSuperseded: "superseded",
}

func (c ErrorCode) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Error reports a refusal. The header's epoch is the checkpoint concerned,
// 0 for the connection as a whole. It doubles as the Nack of a checkpoint.
type Error struct {
	Code    ErrorCode
	Message string
}

func (e Error) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(e.Code))
	return appendStr(dst, truncateUTF8(e.Message, MaxMessageLen))
}

func DecodeError(b []byte) (Error, error) {
	d := decoder{what: "Error", b: b}
	e := Error{Code: ErrorCode(d.u16("code"))}
	e.Message = d.str("message", MaxMessageLen)
	if err := d.done(); err != nil {
		return Error{}, err
	}
	if e.Code == 0 {
		d.fail("code 0")
	}
	return e, d.err
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// GoodbyeReason says why the primary stops on purpose.
type GoodbyeReason uint8

const (
	// GoodbyeDeleted: the container was killed or deleted through containerd.
	GoodbyeDeleted GoodbyeReason = 1
	// GoodbyeShutdown: the engine was closed on a normal shutdown.
	GoodbyeShutdown GoodbyeReason = 2
	// GoodbyeDemoted: a planned demotion; the service moves on by other means.
	GoodbyeDemoted GoodbyeReason = 3
	// GoodbyeDegraded: the primary gave up on this backup and runs on
	// unreplicated; the backup's checkpoint is stale from now on.
	GoodbyeDegraded GoodbyeReason = 4
)

var goodbyeNames = map[GoodbyeReason]string{GoodbyeDeleted: "deleted", GoodbyeShutdown: "shutdown", GoodbyeDemoted: "demoted", GoodbyeDegraded: "degraded"}

func (r GoodbyeReason) String() string {
	if n, ok := goodbyeNames[r]; ok {
		return n
	}
	return fmt.Sprintf("GoodbyeReason(%d)", uint8(r))
}

// Goodbye is the primary's last frame before it closes the connection on
// purpose; the backup then does not take over. The header's epoch is the
// last checkpoint epoch the primary sent. Nothing may follow it.
type Goodbye struct {
	Reason  GoodbyeReason
	Message string
}

func (g Goodbye) Append(dst []byte) []byte {
	dst = append(dst, byte(g.Reason))
	return appendStr(dst, truncateUTF8(g.Message, MaxMessageLen))
}

func DecodeGoodbye(b []byte) (Goodbye, error) {
	d := decoder{what: "Goodbye", b: b}
	g := Goodbye{Reason: GoodbyeReason(d.u8("reason"))}
	g.Message = d.str("message", MaxMessageLen)
	if err := d.done(); err != nil {
		return Goodbye{}, err
	}
	if _, ok := goodbyeNames[g.Reason]; !ok {
		d.fail("reason %d", uint8(g.Reason))
	} else if !utf8.ValidString(g.Message) {
		d.fail("message is not UTF-8")
	}
	return g, d.err
}
