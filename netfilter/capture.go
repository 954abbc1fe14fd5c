// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// InputCapture logs what the gate namespace delivers to the container
// (hybrid mode) from a packet ring on the link toward it, without holding
// anything: the kernel writes each packet into the ring as it transmits it
// to the container, before the container can see it, and Drain hands the
// ring's packets to the Record function in that order. Whoever logs an
// output drains first, so every input the container received before it
// produced the output is in the log before the output (docs/HYBRID.md).
//
// The kernel cannot be made to wait for the ring: a full ring drops the
// copy, not the packet, and a packet larger than a frame is cut. Either
// means an input is missing from the log, so Drain fails and the capture is
// stopped (fail closed: the engine stops releasing output on this log).
type InputCapture struct {
	record Record
	logged func() // after each background drain, if set
	fd     int
	file   *os.File
	conn   syscall.RawConn

	mu        sync.Mutex
	ring      []byte
	frameSize int
	frames    int
	next      int   // the frame to read next
	err       error // the capture failed: every later Drain returns it
}

// captureRingBytes is the ring's size. The background drain (Run) empties it
// at least every captureLinger, so it holds that long of input at any
// rate the link can carry.
const (
	captureRingBytes = 2 << 20
	captureLinger    = time.Millisecond
)

// Record takes an inbound packet (from its IP header on) before the
// container can see it. It runs on the goroutine that drains the capture
// and must not keep p. An error stops the capture.
type Record func(p []byte) error

// Packet types and ancillary data offsets of classic BPF (linux/filter.h).
const (
	skfAdOff      = 0xfffff000
	skfAdProtocol = 0
	skfAdPkttype  = 4
)

// OpenInputCapture opens a capture of the IP packets transmitted on
// ifname in the network namespace netns (the gate's link toward the
// container). It turns checksum and segmentation offloads off on that link
// (noSegmentationOffload): each frame holds one wire-sized packet as the
// container receives it.
// logged, if set, is called after each background drain (Run).
func OpenInputCapture(netns, ifname string, record Record, logged func()) (*InputCapture, error) {
	if record == nil {
		return nil, errors.New("input capture: no record function")
	}
	var fd, mtu, ifindex int
	err := launch.InNetns(netns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		ifindex, mtu = ifi.Index, ifi.MTU
		if err := noSegmentationOffload(ifname); err != nil {
			return err
		}
		// Protocol 0 receives nothing until the filter is in place and the
		// bind names the protocol and the link.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("input capture on %s: %w", ifname, err)
	}
	c := &InputCapture{record: record, logged: logged, fd: fd}
	if err := c.setup(ifindex, mtu); err != nil {
		c.Close()
		return nil, fmt.Errorf("input capture on %s: %w", ifname, err)
	}
	return c, nil
}

func (c *InputCapture) setup(ifindex, mtu int) error {
	// Transmitted IPv4 and IPv6 packets only.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdPkttype},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 4, K: unix.PACKET_OUTGOING},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdProtocol},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: unix.ETH_P_IP},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.ETH_P_IPV6},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	if err := unix.SetsockoptSockFprog(c.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fmt.Errorf("attach filter: %w", err)
	}
	if err := unix.SetsockoptInt(c.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fmt.Errorf("ring version: %w", err)
	}
	// A frame holds its header, the link-layer address and the packet.
	c.frameSize = 2048
	for c.frameSize < mtu+256 {
		c.frameSize *= 2
	}
	block := max(c.frameSize, 64<<10)
	c.frames = captureRingBytes / c.frameSize
	req := unix.TpacketReq{Block_size: uint32(block), Block_nr: uint32(captureRingBytes / block),
		Frame_size: uint32(c.frameSize), Frame_nr: uint32(c.frames)}
	if err := unix.SetsockoptTpacketReq(c.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("ring of %d frames: %w", c.frames, err)
	}
	ring, err := unix.Mmap(c.fd, 0, captureRingBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map ring: %w", err)
	}
	c.ring = ring
	if err := unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	// Drops counted before the bind (none can be) would fail the first
	// Drain: read and reset the counters.
	if _, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err != nil {
		return fmt.Errorf("statistics: %w", err)
	}
	c.file = os.NewFile(uintptr(c.fd), "input-capture")
	if c.conn, err = c.file.SyscallConn(); err != nil {
		return err
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// status is the frame's status word, shared with the kernel.
func (c *InputCapture) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&c.ring[i*c.frameSize]))
}

// Drain hands every packet the ring holds to Record, in the order the
// kernel transmitted them; it fails if the kernel dropped or cut one.
func (c *InputCapture) Drain() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if c.ring == nil {
		return c.fail(errors.New("input capture closed"))
	}
	drained := 0
	for {
		st := c.status(c.next)
		s := atomic.LoadUint32(st)
		if s&unix.TP_STATUS_USER == 0 {
			break
		}
		h := (*unix.Tpacket2Hdr)(unsafe.Pointer(st))
		if s&(unix.TP_STATUS_LOSING|unix.TP_STATUS_CSUMNOTREADY) != 0 || h.Snaplen < h.Len || int(h.Net)+int(h.Snaplen) > c.frameSize {
			return c.fail(fmt.Errorf("inbound packet of %d bytes captured as %d (status %#x: dropped before it, or its checksum left to offload): it cannot be logged", h.Len, h.Snaplen, s))
		}
		f := c.ring[c.next*c.frameSize:][:c.frameSize]
		if err := c.record(f[h.Net : int(h.Net)+int(h.Snaplen)]); err != nil {
			return c.fail(fmt.Errorf("logging an inbound packet: %w", err))
		}
		atomic.StoreUint32(st, unix.TP_STATUS_KERNEL)
		c.next = (c.next + 1) % c.frames
		drained++
	}
	// The kernel drops a copy only when the frame at its head is still
	// ours, i.e. when every frame filled since the last drain: only a drain
	// that found the ring full needs to read the drop counter (a syscall;
	// it resets on read).
	if drained < c.frames {
		return nil
	}
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return c.fail(fmt.Errorf("input capture statistics: %w", err))
	}
	if st.Drops > 0 {
		return c.fail(fmt.Errorf("input capture: the ring was full, %d inbound packets were delivered without being logged", st.Drops))
	}
	return nil
}

func (c *InputCapture) fail(err error) error {
	c.err = err
	return err
}

// Run drains the ring in the background until ctx is done (nil) or the
// capture fails: inputs that no output follows are logged too, and the ring
// never fills. It drains at most every captureLinger, so that a busy link
// costs a wake-up per millisecond, not one per packet.
func (c *InputCapture) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.file.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		err := c.conn.Read(func(uintptr) bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.ring == nil || atomic.LoadUint32(c.status(c.next))&unix.TP_STATUS_USER != 0
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("input capture: %w", err)
		}
		if err := c.Drain(); err != nil {
			return err
		}
		if c.logged != nil {
			c.logged()
		}
		t.Reset(captureLinger)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close unmaps the ring and closes the socket; idempotent.
func (c *InputCapture) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	if c.ring != nil {
		errs = append(errs, unix.Munmap(c.ring))
		c.ring = nil
	}
	switch {
	case c.file != nil:
		errs = append(errs, c.file.Close())
		c.file = nil
	case c.fd > 0:
		errs = append(errs, unix.Close(c.fd))
	}
	c.fd = -1
	return errors.Join(errs...)
}

// noSegmentationOffload turns checksum offload, TCP segmentation offload
// and generic segmentation off on ifname (in the caller's namespace), with
// the ethtool requests every driver answers: the kernel then completes
// checksums and segments before the ring copies a packet, which a replay
// can feed as it is.
func noSegmentationOffload(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	for _, cmd := range []uint32{unix.ETHTOOL_STXCSUM, unix.ETHTOOL_STSO, unix.ETHTOOL_SGSO} {
		v := struct{ cmd, data uint32 }{cmd: cmd}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer // a pointer, so that a moved stack updates it
			_    [16]byte
		}
		copy(ifr.name[:], ifname)
		ifr.data = unsafe.Pointer(&v)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
			return fmt.Errorf("turning segmentation offload off on %s (ethtool %#x): %w", ifname, cmd, errno)
		}
	}
	return nil
}
