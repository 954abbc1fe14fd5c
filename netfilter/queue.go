// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/iorrc/rrc/runtime/launch"
)

// Defaults of QueueOptions.
const (
	// DefaultCopyRange covers the largest IPv4 header (60) plus the largest
	// TCP header (60) with room for IPv6 extension headers: enough to log
	// flows and to see TCP flags, without copying payloads to user space.
	DefaultCopyRange = 256
	// MaxCopyRange copies whole packets up to the largest the attribute
	// carries: what a log of the packets needs.
	MaxCopyRange = 0xffff - nlattrHdr
	// DefaultMaxLen is how many packets the kernel holds for the queue before
	// it drops new ones: a whole epoch of output of a busy server.
	DefaultMaxLen = 65536
	// DefaultRcvBuf absorbs bursts of packet notifications (each is an skb of
	// a few hundred bytes to a few KiB of truesize) while the reader is late.
	DefaultRcvBuf = 32 << 20
)

// QueueOptions configure OpenQueue; zero fields take the defaults.
type QueueOptions struct {
	CopyRange uint32 // bytes of each packet copied to user space (max 65531)
	MaxLen    uint32 // kernel queue length; packets beyond it are dropped (never accepted)
	RcvBuf    int    // socket receive buffer, set with SO_RCVBUFFORCE
	// NoGSO makes the kernel segment GSO packets before queueing them (one
	// queue entry per wire packet). By default GSO packets are queued whole:
	// fewer entries and verdicts, and nothing here needs wire-sized packets.
	NoGSO bool
}

type queueConfig struct {
	copyRange, maxLen uint32
	gso               bool
}

// Queue is a bound nfnetlink_queue: a NETLINK_NETFILTER socket created in a
// given network namespace. Packets are read with ReadBatch by one goroutine;
// verdicts may be sent from any goroutine.
//
// Closing the queue (or the process dying) makes the kernel drop every packet
// still waiting for a verdict, and with no socket bound, packets sent to the
// queue number are dropped too (the rules never use --queue-bypass): the
// queue fails closed.
type Queue struct {
	num    uint16
	file   *os.File
	conn   syscall.RawConn
	maxMsg int // largest datagram expected, for read-buffer room

	readBuf []byte   // owned by the ReadBatch caller
	pending [][]byte // datagrams that arrived while waiting for the bind ack

	sendMu  sync.Mutex
	sendBuf []byte
}

// OpenQueue creates a netfilter netlink socket in the network namespace at
// netnsPath ("" = the caller's), binds queue num to it and configures it
// (copy packets up to CopyRange, queue length MaxLen, fail-open cleared).
// It fails with EPERM if another socket has the queue (in this namespace).
func OpenQueue(ctx context.Context, netnsPath string, num uint16, opts QueueOptions) (*Queue, error) {
	cfg := queueConfig{copyRange: opts.CopyRange, maxLen: opts.MaxLen, gso: !opts.NoGSO}
	if cfg.copyRange == 0 {
		cfg.copyRange = DefaultCopyRange
	}
	if cfg.copyRange > 0xffff-nlattrHdr {
		return nil, fmt.Errorf("nfqueue %d: copy range %d exceeds %d", num, cfg.copyRange, 0xffff-nlattrHdr)
	}
	if cfg.maxLen == 0 {
		cfg.maxLen = DefaultMaxLen
	}
	rcvBuf := opts.RcvBuf
	if rcvBuf == 0 {
		rcvBuf = DefaultRcvBuf
	}
	var fd int
	err := launch.InNetns(netnsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nfqueue %d: create netlink socket: %w", num, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nfqueue %d: set receive buffer to %d bytes (SO_RCVBUFFORCE needs CAP_NET_ADMIN): %w", num, rcvBuf, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nfqueue %d: bind netlink socket: %w", num, err)
	}
	file := os.NewFile(uintptr(fd), fmt.Sprintf("nfqueue-%d", num))
	conn, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("nfqueue %d: %w", num, err)
	}
	maxMsg := int(cfg.copyRange) + 1024 // attributes other than the payload stay well below 1 KiB
	q := &Queue{
		num:     num,
		file:    file,
		conn:    conn,
		maxMsg:  maxMsg,
		readBuf: make([]byte, max(256<<10, 16*maxMsg)),
	}
	if err := q.configure(ctx, cfg); err != nil {
		file.Close()
		return nil, err
	}
	return q, nil
}

// Num is the queue number.
func (q *Queue) Num() uint16 { return q.num }

// Close closes the socket; the kernel drops the packets still queued.
func (q *Queue) Close() error { return q.file.Close() }

// configure sends the bind-and-configure request and waits for its ack.
// Packets may already arrive before the ack; they are kept for ReadBatch.
func (q *Queue) configure(ctx context.Context, cfg queueConfig) error {
	const seq = 1
	if err := q.send(encodeConfig(make([]byte, 0, 128), seq, q.num, cfg)); err != nil {
		return fmt.Errorf("nfqueue %d: send bind request: %w", q.num, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := q.file.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("nfqueue %d: %w", q.num, err)
	}
	defer q.file.SetReadDeadline(time.Time{})
	buf := make([]byte, q.maxMsg+4096)
	for {
		n, err := q.recv(buf)
		if err != nil {
			return fmt.Errorf("nfqueue %d: wait for bind ack: %w", q.num, err)
		}
		acked := false
		err = splitMessages(buf[:n], func(m message) error {
			if m.typ != unix.NLMSG_ERROR || m.seq != seq {
				return nil
			}
			e, err := decodeError(m.body)
			if err != nil {
				return err
			}
			acked = true
			if e.Errno == unix.EPERM { // the kernel's answer when another port owns the queue
				return fmt.Errorf("queue is bound by another socket (a gate still running, or stale?): %w", e)
			}
			if e.Errno != 0 {
				return e
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("nfqueue %d: bind: %w", q.num, err)
		}
		if acked {
			return nil
		}
		q.pending = append(q.pending, append([]byte(nil), buf[:n]...))
	}
}

// recv reads one datagram from the kernel, waiting in the runtime poller.
// A datagram larger than buf is an error, not a silent cut.
func (q *Queue) recv(buf []byte) (int, error) {
	var n int
	var rerr error
	err := q.conn.Read(func(fd uintptr) bool {
		n, rerr = recvFromKernel(int(fd), buf)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, nil
}

// recvFromKernel is a non-blocking recvfrom without allocations; datagrams
// not sent by the kernel (port id 0) are skipped.
func recvFromKernel(fd int, buf []byte) (int, error) {
	for {
		var sa unix.RawSockaddrNetlink
		salen := uint32(unsafe.Sizeof(sa))
		r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			unix.MSG_TRUNC|unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)))
		if e != 0 {
			return 0, e
		}
		n := int(r)
		if sa.Pid != 0 {
			continue // only the kernel speaks for the queue; drop forgeries
		}
		if n > len(buf) {
			return 0, fmt.Errorf("datagram of %d bytes exceeds the %d-byte read buffer", n, len(buf))
		}
		return n, nil
	}
}

// IsOverrun reports whether err is a receive-buffer overrun (ENOBUFS): the
// kernel could not deliver some packet notifications to the socket. It drops
// those packets (counted in queue_user_dropped of
// /proc/net/netfilter/nfnetlink_queue; fail-open is off), so nothing leaks:
// TCP retransmits them. An overrun is a sign that RcvBuf is too small or the
// reader too slow.
func IsOverrun(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// ReadBatch waits for at least one packet, then takes every packet already
// waiting, up to len(dst), without waiting more. Payloads alias an internal
// buffer valid until the next ReadBatch. It returns the packets read before
// an error too: a *NetlinkError (the kernel rejected an earlier verdict), an
// overrun (IsOverrun), or ctx's error once ctx is done.
func (q *Queue) ReadBatch(ctx context.Context, dst []Packet) (int, error) {
	if len(dst) == 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := q.file.SetReadDeadline(time.Time{}); err != nil {
		return 0, fmt.Errorf("nfqueue %d: %w", q.num, err)
	}
	// Cancellation interrupts the poller wait by moving the deadline into the
	// past. If the callback has started, wait for it, so that it cannot hit
	// a later ReadBatch.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		q.file.SetReadDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-interrupted
		}
	}()

	n := 0
	var derr error
	add := func(p Packet) {
		if n == len(dst) {
			derr = fmt.Errorf("nfqueue %d: datagram holds more packets than the batch has room for", q.num)
			return
		}
		dst[n] = p
		n++
	}
	for len(q.pending) > 0 && n < len(dst) && derr == nil {
		d := q.pending[0]
		q.pending = q.pending[1:]
		if err := decodeDatagram(d, add); err != nil {
			return n, fmt.Errorf("nfqueue %d: %w", q.num, err)
		}
	}
	if n > 0 || derr != nil {
		return n, derr
	}
	off := 0
	var rerr error
	err := q.conn.Read(func(fd uintptr) bool {
		for n < len(dst) && len(q.readBuf)-off >= q.maxMsg {
			r, err := recvFromKernel(int(fd), q.readBuf[off:])
			if err == unix.EAGAIN {
				return n > 0 // wait in the poller only while nothing was read
			}
			if err != nil {
				rerr = err
				return true
			}
			if err := decodeDatagram(q.readBuf[off:off+r], add); err != nil {
				rerr = err
				return true
			}
			if derr != nil {
				return true
			}
			off = align4(off + r)
		}
		return true
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return n, ctx.Err()
	case err != nil:
		return n, fmt.Errorf("nfqueue %d: read: %w", q.num, err)
	case rerr != nil && IsOverrun(rerr):
		return n, fmt.Errorf("nfqueue %d: receive buffer overrun, the kernel dropped packets it could not report: %w", q.num, rerr)
	case rerr != nil:
		return n, fmt.Errorf("nfqueue %d: read: %w", q.num, rerr)
	}
	return n, derr
}

// Verdict issues a verdict on packet id alone.
func (q *Queue) Verdict(id uint32, v Verdict) error {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	q.sendBuf = encodeVerdict(q.sendBuf, q.num, id, v, false)
	if err := q.send(q.sendBuf); err != nil {
		return fmt.Errorf("nfqueue %d: verdict %d on packet %d: %w", q.num, v, id, err)
	}
	return nil
}

// VerdictPayload issues verdict v on packet id alone, with the packet's new
// content (from its IP header on, checksums already right).
func (q *Queue) VerdictPayload(id uint32, v Verdict, payload []byte) error {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	q.sendBuf = encodeVerdictPayload(q.sendBuf, q.num, id, v, false, payload)
	if err := q.send(q.sendBuf); err != nil {
		return fmt.Errorf("nfqueue %d: verdict %d on rewritten packet %d: %w", q.num, v, id, err)
	}
	return nil
}

// VerdictBatch issues verdict v on every queued packet with an id up to and
// including maxID (modulo 2^32), in queue order, in one message.
func (q *Queue) VerdictBatch(maxID uint32, v Verdict) error {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	q.sendBuf = encodeVerdict(q.sendBuf, q.num, maxID, v, true)
	if err := q.send(q.sendBuf); err != nil {
		return fmt.Errorf("nfqueue %d: batch verdict %d on packets up to %d: %w", q.num, v, maxID, err)
	}
	return nil
}

// send writes one request to the kernel (the socket's default destination).
func (q *Queue) send(b []byte) error {
	var werr error
	err := q.conn.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), b)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}
