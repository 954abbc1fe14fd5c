// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// watchedConn is the TCP connection under TLS, instrumented so that the
// failure detector can tell "the peer is silent" from "this process has not
// got round to reading". Under CPU pressure a goroutine woken by the network
// poller can wait hundreds of milliseconds for a processor while others run
// (seen on the project's 2-core machines, and always under the race
// detector); blaming the peer for that would be a false failure, and on the
// backup a false promotion.
type watchedConn struct {
	net.Conn
	reading  atomic.Bool  // inside a Read of the socket
	lastRead atomic.Int64 // Unix ns of the last Read that returned bytes
	raw      syscall.RawConn
}

func watch(c net.Conn) *watchedConn {
	w := &watchedConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
		}
	}
	return w
}

func (c *watchedConn) Read(b []byte) (int, error) {
	c.reading.Store(true)
	n, err := c.Conn.Read(b)
	if n > 0 {
		// Any bytes prove the peer alive, also those of a large frame
		// still incomplete (a forger would be caught by TLS at once).
		c.lastRead.Store(time.Now().UnixNano())
	}
	c.reading.Store(false)
	return n, err
}

// LastReceived is when bytes from the peer last arrived.
func (c *watchedConn) LastReceived() time.Time {
	if n := c.lastRead.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// WaitingForPeer reports whether this side has consumed everything the peer
// sent and is waiting for more: the reader is blocked in Read and the kernel
// holds no unread bytes. Only then does silence say something about the
// peer.
func (c *watchedConn) WaitingForPeer() bool {
	if !c.reading.Load() {
		return false // reading a frame's rest, or handling one
	}
	n, ok := c.unread()
	return !ok || n == 0
}

// PeerKernelLastHeard is when the peer's kernel last gave a sign of life
// (kernelSilence): its host and the path to it were alive then, even if
// the peer process has been silent. ok is false where the kernel cannot
// tell.
func (c *watchedConn) PeerKernelLastHeard() (time.Time, bool) {
	ago, ok := c.peerKernelSilence()
	if !ok {
		return time.Time{}, false
	}
	return time.Now().Add(-ago), true
}

// kernelSilence is how long the peer's kernel has given no sign of life,
// from this side's TCP state: none while it has acknowledged everything
// this side sent (unacked 0) and no probe of its closed window went
// unanswered, since a host that is gone acknowledges nothing and this side
// sends a heartbeat every interval; else since its last acknowledgement
// (lastAckRecvMS, TCP_INFO's last_ack_recv). Without the first rule a peer
// whose process starved with a full receive window (its kernel holding
// everything, advertising no room) and a side that starved itself and sent
// nothing both looked like a host that had died.
func kernelSilence(unacked uint32, probes uint8, lastAckRecvMS uint32) time.Duration {
	if unacked == 0 && probes == 0 {
		return 0
	}
	return time.Duration(lastAckRecvMS) * time.Millisecond
}
