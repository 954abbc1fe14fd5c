// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"errors"
	"fmt"
	"strings"

	skopts "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-opts"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// ErrUnsupported is wrapped by the errors of a capture that met something
// the fast path does not carry (CRIU does): the checkpoint must be a full
// CRIU dump.
var ErrUnsupported = errors.New("not carried by the fast path")

// soBufLock is SO_BUF_LOCK (5.14 and later); golang.org/x/sys may lack it.
const soBufLock = 72

// SocketOptions reads a socket's options as CRIU's dump_socket_opts does,
// into the SkOptsEntry of its files.img entry: they change while the
// socket lives (the kernel tunes the buffer sizes, programs set timeouts).
// A socket with a BPF filter attached is not carried (ErrUnsupported).
func SocketOptions(fd, family int) (*skopts.SkOptsEntry, error) {
	var errs []error
	get := func(level, opt int) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("option %d/%d: %w", level, opt, err))
		}
		return v
	}
	flag := func(opt int) *bool { return proto.Bool(get(unix.SOL_SOCKET, opt) != 0) }
	o := &skopts.SkOptsEntry{
		SoSndbuf:   proto.Uint32(uint32(get(unix.SOL_SOCKET, unix.SO_SNDBUF))),
		SoRcvbuf:   proto.Uint32(uint32(get(unix.SOL_SOCKET, unix.SO_RCVBUF))),
		SoBufLock:  proto.Uint32(uint32(get(unix.SOL_SOCKET, soBufLock))),
		SoPriority: proto.Uint32(uint32(get(unix.SOL_SOCKET, unix.SO_PRIORITY))),
		SoRcvlowat: proto.Uint32(uint32(get(unix.SOL_SOCKET, unix.SO_RCVLOWAT))),
	}
	if mark := get(unix.SOL_SOCKET, unix.SO_MARK); mark != 0 {
		o.SoMark = proto.Uint32(uint32(mark))
	}
	for _, tm := range []struct {
		opt      int
		sec, use **uint64
	}{{unix.SO_SNDTIMEO, &o.SoSndTmoSec, &o.SoSndTmoUsec}, {unix.SO_RCVTIMEO, &o.SoRcvTmoSec, &o.SoRcvTmoUsec}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, tm.opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("timeout option %d: %w", tm.opt, err))
			continue
		}
		*tm.sec, *tm.use = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
	}
	o.Reuseaddr, o.SoReuseport = flag(unix.SO_REUSEADDR), flag(unix.SO_REUSEPORT)
	if family == unix.AF_UNIX || family == unix.AF_NETLINK {
		o.SoPasscred, o.SoPasssec = flag(unix.SO_PASSCRED), flag(unix.SO_PASSSEC)
	}
	o.SoDontroute, o.SoNoCheck, o.SoBroadcast, o.SoKeepalive = flag(unix.SO_DONTROUTE), flag(unix.SO_NO_CHECK), flag(unix.SO_BROADCAST), flag(unix.SO_KEEPALIVE)
	if get(unix.SOL_SOCKET, unix.SO_OOBINLINE) != 0 {
		o.SoOobinline = proto.Uint32(1)
	} else {
		o.SoOobinline = proto.Uint32(0)
	}
	if l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err != nil {
		errs = append(errs, fmt.Errorf("SO_LINGER: %w", err))
	} else if l.Onoff != 0 {
		o.SoLinger = proto.Uint32(uint32(l.Linger))
	}
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err != nil {
		errs = append(errs, fmt.Errorf("SO_BINDTODEVICE: %w", err))
	} else if dev = strings.TrimRight(dev, "\x00"); dev != "" {
		o.SoBoundDev = proto.String(dev)
	}
	if n, err := filterLength(fd); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		errs = append(errs, fmt.Errorf("a socket filter of %d instructions: %w", n, ErrUnsupported))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("socket options: %w", err)
	}
	return o, nil
}

// filterLength is the length of the socket's BPF filter (SO_GET_FILTER
// with no buffer), 0 without one.
func filterLength(fd int) (int, error) {
	n, err := getsockoptBytes(fd, unix.SOL_SOCKET, unix.SO_GET_FILTER, nil)
	if err != nil {
		return 0, fmt.Errorf("SO_GET_FILTER: %w", err)
	}
	return int(n), nil
}

// TCPOptions reads a TCP socket's options as CRIU's dump_tcp_opts does and
// returns them encoded as its tcp_opts_entry (each field only when not
// zero, as CRIU writes them): field 20 of the socket's inetsk entry, which
// the image definitions this module has do not know.
func TCPOptions(fd int) ([]byte, error) {
	var b []byte
	for _, o := range []struct {
		num protowire.Number
		opt int
	}{{1, unix.TCP_CORK}, {2, unix.TCP_NODELAY}, {3, unix.TCP_KEEPCNT}, {4, unix.TCP_KEEPIDLE}, {5, unix.TCP_KEEPINTVL}} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_TCP, o.opt)
		if err != nil {
			return nil, fmt.Errorf("TCP option %d: %w", o.opt, err)
		}
		if v != 0 {
			b = protowire.AppendTag(b, o.num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(uint32(v)))
		}
	}
	return b, nil
}
