// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	tcpstream "github.com/checkpoint-restore/go-criu/v7/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// tcpStreamMagic is TCP_STREAM_MAGIC, the second word of a tcp-stream image.
const tcpStreamMagic = 0x51465506

// TCP states (include/net/tcp_states.h) and tcp_info's option bits.
const (
	tcpEstablished = 1
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpClose       = 7
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpClosing     = 11

	tcpiOptTimestamps = 1
	tcpiOptWscale     = 4

	tcpRecvQueue = 1 // TCP_RECV_QUEUE, for TCP_REPAIR_QUEUE
	tcpSendQueue = 2 // TCP_SEND_QUEUE
)

// TCPStream is what CRIU's tcp-stream-<inode>.img holds of a connection:
// the entry, then the receive queue's and the send queue's bytes.
type TCPStream struct {
	Entry *tcpstream.TcpStreamEntry
	RecvQ []byte
	SendQ []byte
	State uint8 // TCP state, for the socket's inetsk entry
}

// CaptureTCP reads a connected TCP socket's state as CRIU's libsoccr does
// (libsoccr_save): the socket is put in repair mode, its sequence numbers,
// windows, options and both queues read, and repair mode turned off again
// without a window probe. fd is this process's duplicate of the
// container's socket (pidfd_getfd); the container must be stopped.
func CaptureTCP(fd int) (TCPStream, error) {
	var s TCPStream
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, 1); err != nil {
		return s, fmt.Errorf("TCP repair on: %w", err)
	}
	err := captureRepairing(fd, &s)
	if off := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); off != nil {
		err = errors.Join(err, fmt.Errorf("TCP repair off: %w", off))
	}
	return s, err
}

func captureRepairing(fd int, s *TCPStream) error {
	var info [232]byte // struct tcp_info; what is read of it is at fixed offsets
	if _, err := getsockoptBytes(fd, unix.SOL_TCP, unix.TCP_INFO, info[:]); err != nil {
		return fmt.Errorf("TCP_INFO: %w", err)
	}
	s.State = info[0]
	switch s.State {
	case tcpEstablished, tcpFinWait1, tcpFinWait2, tcpLastAck, tcpCloseWait, tcpClosing, tcpClose:
	default:
		return fmt.Errorf("TCP state %d not carried", s.State)
	}
	outq, err1 := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	unsent, err2 := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	inq, err3 := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("queue sizes: %w", err)
	}
	switch {
	case s.State == tcpClose:
		// Reset: what is left to send cannot be read by anyone.
		outq, unsent = 0, 0
	case s.State == tcpFinWait1 || s.State == tcpFinWait2 || s.State == tcpClosing || s.State == tcpLastAck:
		// The FIN is counted in the send queue; it is no data.
		outq, unsent = max(outq-1, 0), max(unsent-1, 0)
	}
	e := &tcpstream.TcpStreamEntry{
		InqLen: proto.Uint32(uint32(inq)), OutqLen: proto.Uint32(uint32(outq)), UnsqLen: proto.Uint32(uint32(unsent)),
		OptMask: proto.Uint32(uint32(info[5])), SndWscale: proto.Uint32(0),
	}
	mss, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("TCP_MAXSEG: %w", err)
	}
	e.MssClamp = proto.Uint32(uint32(mss))
	if info[5]&tcpiOptWscale != 0 {
		e.SndWscale, e.RcvWscale = proto.Uint32(uint32(info[6]&0xf)), proto.Uint32(uint32(info[6]>>4))
	}
	if info[5]&tcpiOptTimestamps != 0 {
		ts, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
		e.Timestamp = proto.Uint32(uint32(ts))
	}
	var win [20]byte // struct tcp_repair_window
	if _, err := getsockoptBytes(fd, unix.SOL_TCP, unix.TCP_REPAIR_WINDOW, win[:]); err != nil {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
	}
	le := binary.LittleEndian
	e.SndWl1, e.SndWnd, e.MaxWindow = proto.Uint32(le.Uint32(win[0:])), proto.Uint32(le.Uint32(win[4:])), proto.Uint32(le.Uint32(win[8:]))
	e.RcvWnd, e.RcvWup = proto.Uint32(le.Uint32(win[12:])), proto.Uint32(le.Uint32(win[16:]))
	var seq uint32
	if s.RecvQ, seq, err = readQueue(fd, tcpRecvQueue, inq); err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	e.InqSeq = proto.Uint32(seq)
	if s.SendQ, seq, err = readQueue(fd, tcpSendQueue, outq); err != nil {
		return fmt.Errorf("send queue: %w", err)
	}
	e.OutqSeq = proto.Uint32(seq)
	s.Entry = e
	return nil
}

// readQueue selects a queue of a socket in repair mode and returns its
// sequence number and its n bytes (asking for one more, to be sure there
// are no more).
func readQueue(fd, queue, n int) ([]byte, uint32, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return nil, 0, fmt.Errorf("select: %w", err)
	}
	seq, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return nil, 0, fmt.Errorf("sequence number: %w", err)
	}
	if n == 0 {
		return nil, uint32(seq), nil
	}
	buf := make([]byte, n+1)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	if got != n {
		return nil, 0, fmt.Errorf("read %d bytes, the queue holds %d", got, n)
	}
	return buf[:n], uint32(seq), nil
}

// getsockoptBytes reads an option into b and returns the length the
// kernel gave; with an empty b only the length is asked for (as
// SO_GET_FILTER answers with its instruction count).
func getsockoptBytes(fd, level, opt int, b []byte) (uint32, error) {
	l := uint32(len(b))
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return l, nil
}

// Image returns the tcp-stream image: its magic, the entry, the queues.
func (s TCPStream) Image() ([]byte, error) {
	rec, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.Entry)
	if err != nil {
		return nil, fmt.Errorf("tcp-stream entry: %w", err)
	}
	b := make([]byte, 0, 12+len(rec)+len(s.RecvQ)+len(s.SendQ))
	b = binary.LittleEndian.AppendUint32(b, 0x54564319) // IMG_COMMON_MAGIC
	b = binary.LittleEndian.AppendUint32(b, tcpStreamMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rec)))
	b = append(b, rec...)
	b = append(b, s.RecvQ...)
	return append(b, s.SendQ...), nil
}
