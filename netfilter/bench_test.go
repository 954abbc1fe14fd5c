// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package netfilter

import (
	"syscall"

	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// countingQueue counts the verdict messages a consumer sends.
type countingQueue struct {
	*Queue
	verdicts atomic.Int64
}

func (c *countingQueue) VerdictBatch(maxID uint32, v Verdict) error {
	c.verdicts.Add(1)
	return c.Queue.VerdictBatch(maxID, v)
}

// BenchmarkGatePassThrough measures the cost per packet of sending UDP
// datagrams (64 bytes, up to 64 in flight) out of ns1 through the output
// queue: with no queue at all, with the gate in pass-through (one batch
// verdict per read batch), and with one verdict per packet, as a classic
// NFQUEUE client does. ns/op is per datagram, sender to receiver.
func BenchmarkGatePassThrough(b *testing.B) {
	for _, mode := range []string{"no-queue", "batch", "per-packet"} {
		b.Run(mode, func(b *testing.B) { benchPassThrough(b, mode) })
	}
}

func benchPassThrough(b *testing.B, mode string) {
	requireKernel(b)
	p := newNSPair(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cq *countingQueue
	if mode != "no-queue" {
		out, err := OpenQueue(ctx, p.ns1, outQueue, QueueOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		cq = &countingQueue{Queue: out}
		in, err := OpenQueue(ctx, p.ns1, inQueue, QueueOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer in.Close()
		go func() {
			if err := NewInputHold(in, discardLog()).Run(ctx); err != nil && ctx.Err() == nil {
				b.Error(err)
			}
		}()
		switch mode {
		case "batch":
			g := NewOutputGate(cq, discardLog())
			g.ReleaseAll()
			go g.Run(ctx)
		case "per-packet":
			go func() {
				batch := make([]Packet, readBatchSize)
				for ctx.Err() == nil {
					n, _ := out.ReadBatch(ctx, batch)
					for _, pkt := range batch[:n] {
						cq.verdicts.Add(1)
						out.Verdict(pkt.ID, Accept)
					}
				}
			}()
		}
		if err := (&Rules{NetNS: p.ns1, OutputQueue: outQueue, InputQueue: inQueue}).Install(ctx); err != nil {
			b.Fatal(err)
		}
	}
	var rx net.PacketConn
	inNS(b, p.ns2, func() (err error) { rx, err = net.ListenPacket("udp", ns2Addr+":7010"); return })
	defer rx.Close()
	var tx net.Conn
	inNS(b, p.ns1, func() (err error) { tx, err = net.Dial("udp", ns2Addr+":7010"); return })
	defer tx.Close()

	const window = 64
	acks := make(chan struct{}, window)
	dead := make(chan struct{})
	go func() {
		defer close(dead)
		buf := make([]byte, 2048)
		for {
			rx.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := rx.ReadFrom(buf); err != nil {
				return
			}
			acks <- struct{}{}
		}
	}()
	msg := make([]byte, 64)
	tx.Write(msg) // resolve the neighbour first
	<-acks
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i >= window {
			select {
			case <-acks:
			case <-dead:
				b.Fatalf("datagram lost after %d", i)
			}
		}
		tx.Write(msg)
	}
	for i := 0; i < min(b.N, window); i++ {
		select {
		case <-acks:
		case <-dead:
			b.Fatal("datagram lost at the end")
		}
	}
	b.StopTimer()
	if cq != nil {
		if v := cq.verdicts.Load(); v > 0 {
			b.ReportMetric(float64(b.N+1)/float64(v), "pkts/verdict")
		}
	}
}

// BenchmarkGateRoundTrip measures one TCP request/response (16 bytes each
// way) between ns2 and an echo server in ns1, with no queue, and with both
// queues bound in pass-through (gate after ReleaseAll, input hold idle):
// the latency every request pays for going through user space twice.
func BenchmarkGateRoundTrip(b *testing.B) {
	for _, mode := range []string{"no-queue", "pass-through"} {
		b.Run(mode, func(b *testing.B) {
			requireKernel(b)
			p := newNSPair(b)
			if mode == "pass-through" {
				c := startContainer(b, p.ns1, QueueOptions{})
				c.gate.ReleaseAll()
			}
			var l net.Listener
			inNS(b, p.ns1, func() (err error) { l, err = net.Listen("tcp", ns1Addr+":7011"); return })
			defer l.Close()
			go func() {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				buf := make([]byte, 16)
				for {
					if _, err := conn.Read(buf); err != nil {
						return
					}
					conn.Write(buf)
				}
			}()
			var conn net.Conn
			inNS(b, p.ns2, func() (err error) { conn, err = net.Dial("tcp", ns1Addr+":7011"); return })
			defer conn.Close()
			buf := make([]byte, 16)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				conn.Write(buf)
				if _, err := conn.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGateEpochBulk measures a bulk TCP transfer out of ns1 through the
// gate: in pass-through, and gated with epochs of 10 and 50 ms that commit
// at once (seal then release, no checkpoint): how much output one epoch can
// carry when the sender's TCP stalls on its held, unacknowledged packets.
func BenchmarkGateEpochBulk(b *testing.B) {
	type variant struct {
		epoch time.Duration
		peer  bool // gate in the peer namespace, after the veth (see below)
	}
	for _, v := range []variant{{0, false}, {10 * time.Millisecond, false}, {50 * time.Millisecond, false}, {10 * time.Millisecond, true}, {50 * time.Millisecond, true}} {
		epoch := v.epoch
		name := "pass-through"
		if epoch > 0 {
			name = "epoch-" + epoch.String()
		}
		if v.peer {
			name += "-after-veth"
		}
		b.Run(name, func(b *testing.B) {
			requireKernel(b)
			p := newNSPair(b)
			var c *container
			if !v.peer {
				c = startContainer(b, p.ns1, QueueOptions{})
			} else {
				// The same gate, fed from ns2's PREROUTING (HostOutputRules,
				// ns2 playing the host): the packets have crossed the veth,
				// which detached them from the sending socket, so TCP Small
				// Queues no longer count them.
				ctx, cancel := context.WithCancel(context.Background())
				q, err := OpenQueue(ctx, p.ns2, outQueue, QueueOptions{})
				if err != nil {
					b.Fatal(err)
				}
				c = &container{gate: NewOutputGate(q, discardLog())}
				go c.gate.Run(ctx)
				b.Cleanup(func() { cancel(); q.Close() })
				hr := &HostOutputRules{NetNS: p.ns2, Port: "v1", Queue: outQueue}
				if err := hr.Install(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if epoch == 0 {
				c.gate.ReleaseAll()
			} else {
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					t := time.NewTicker(epoch)
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							c.gate.Release(c.gate.Seal())
						}
					}
				}()
			}
			var l net.Listener
			inNS(b, p.ns2, func() (err error) { l, err = net.Listen("tcp", ns2Addr+":7012"); return })
			defer l.Close()
			const chunk = 64 << 10
			total := int64(b.N) * chunk
			done := make(chan int64, 1)
			go func() {
				conn, err := l.Accept()
				if err != nil {
					done <- 0
					return
				}
				defer conn.Close()
				var n int64
				buf := make([]byte, 1<<20)
				for n < total {
					r, err := conn.Read(buf)
					n += int64(r)
					if err != nil {
						break
					}
				}
				done <- n
			}()
			var conn net.Conn
			dialed := dial(p.ns1, ns2Addr+":7012")
			select {
			case conn = <-dialed:
			case <-time.After(5 * time.Second):
			}
			if conn == nil {
				b.Fatal("dial failed")
			}
			defer conn.Close()
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if n := <-done; n != total {
				b.Fatalf("received %d of %d bytes", n, total)
			}
			b.StopTimer()
			if raw, err := conn.(syscall.Conn).SyscallConn(); err == nil {
				raw.Control(func(fd uintptr) {
					if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
						b.ReportMetric(float64(info.Total_retrans), "retrans")
						b.ReportMetric(float64(info.Snd_cwnd), "cwnd")
						b.ReportMetric(float64(info.Rtt)/1000, "srtt-ms")
					}
				})
			}
			st := c.gate.Stats()
			b.ReportMetric(float64(st.ReleasedBytes)/float64(max(st.Released, 1)), "B/pkt")
		})
	}
}
