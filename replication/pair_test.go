package replication

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/peertest"
)

// cuttableProxy forwards TCP between the primary and the backup until cut:
// then it silently swallows everything in both directions, as a failed
// host would (no FIN, no RST).
type cuttableProxy struct {
	ln      net.Listener
	backend string
	cut     atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func newCuttableProxy(t *testing.T, backend string) *cuttableProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{ln: ln, backend: backend}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go p.pipe(c, b)
			go p.pipe(b, c)
		}
	}()
	return p
}

func (p *cuttableProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF && !p.cut.Load() {
				dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

// TestPairOverLoopback runs a Primary (fake container and gate) against a
// real Backup over the real TLS peer channel: checkpoints are committed
// and acknowledged, output released; a clean Close does not promote;
// silence (the proxy swallows everything) promotes.
func TestPairOverLoopback(t *testing.T) {
	for _, tc := range []struct {
		name        string
		silence     bool
		wantPromote bool
	}{
		{name: "primary silent: backup promotes", silence: true, wantPromote: true},
		{name: "primary closes cleanly: no promotion", silence: false, wantPromote: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki, err := peertest.GenerateTestPKI(t.TempDir(), "primary", "backup")
			if err != nil {
				t.Fatal(err)
			}
			load := func(h string) *PeerTLS {
				f := pki.Hosts[h]
				return &PeerTLS{CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile}
			}
			bcreds, err := load("backup").Load()
			if err != nil {
				t.Fatal(err)
			}
			pcreds, err := load("primary").Load()
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			rec := newRecorder()
			b, err := StartBackup(context.Background(), BackupOptions{
				Config: Config{Role: RoleBackup, Pair: "p1", Listen: ln.Addr().String(), PeerName: "primary", Heartbeat: 10 * time.Millisecond},
				TLS:    bcreds, StoreDir: t.TempDir(), Listener: ln,
				Restorer: fakeRestorer{rec: rec}, Network: fakeNetwork{rec: rec},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close(context.Background()) })
			proxy := newCuttableProxy(t, ln.Addr().String())

			pk := &fakePackets{rec: rec, failed: make(chan error, 1)}
			p, err := NewPrimary(context.Background(), PrimaryOptions{
				Config: Config{Role: RolePrimary, Pair: "p1", Peer: proxy.ln.Addr().String(), PeerName: "backup",
					Epoch: 20 * time.Millisecond, Heartbeat: 10 * time.Millisecond},
				TLS: pcreds, Packets: pk, WorkDir: t.TempDir(),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close(context.Background()) })
			if err := p.Start(context.Background(), &fakeCheckpointer{rec: rec}); err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, "release-output:3")
			if st := b.Status(); st.State != StateInSync || st.CommittedEpoch < 3 {
				t.Fatalf("backup status %+v", st)
			}
			if tc.silence {
				proxy.cut.Store(true)
			} else {
				p.Close(context.Background())
			}
			select {
			case <-b.Promoted():
			case <-time.After(time.Second):
			}
			st := b.Status()
			if promoted := st.State == StatePrimaryAfterFailover; promoted != tc.wantPromote {
				t.Fatalf("backup state %q (%s), want promoted %v; events %v", st.State, st.Reason, tc.wantPromote, rec.list())
			}
			if tc.wantPromote {
				checkOrder(t, rec.list(), []string{"prepare-restore", "restore:" + itoa(st.Failover.Epoch), "network-up"}, nil)
				if st.Failover.DetectionMS < 30 || st.Restored == nil || st.Restored.Pid != 4242 {
					t.Errorf("failover %+v restored %+v", st.Failover, st.Restored)
				}
				// The primary, cut off too, went degraded: output released.
				select {
				case <-p.Done():
				case <-time.After(2 * time.Second):
					t.Fatal("primary did not notice the silence")
				}
				if ps := p.Status(); ps.State != StateDegraded {
					t.Errorf("primary state %q", ps.State)
				}
				rec.waitFor(t, "release-all")
			}
		})
	}
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }
