// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/peertls/pki"
	"github.com/iorrc/rrc/runtime/launch"
	"github.com/iorrc/rrc/shim/status"
	"github.com/iorrc/rrc/test/lab"
)

// TestForgedPeersAndCorruptCheckpoint: one genuine pair (f1, a→b) through
// containerd, and around it what must be refused:
//   - clients that are not the configured primary connecting to the
//     backup's shim (another CA, the right CA but another name, plain TCP
//     garbage): refused and logged, the genuine pair stays in sync;
//   - a primary whose io.rrc.peer is a listener with a wrong certificate:
//     it never replicates to it and keeps its output held (fail closed);
//   - a corrupted committed checkpoint: the next commit replaces it; and
//     when the primary fails while the backup's only checkpoint is corrupt,
//     the promotion refuses to restore it (failed, with the reason) while the
//     genuine pair, crashed at the same moment, fails over.
func TestForgedPeersAndCorruptCheckpoint(t *testing.T) {
	rl := startReplicationLab(t, "rrcfp", "10.91.0")
	l := rl.l
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Checkpoints go on with no client (the damage tests count on them).
	good := pairSpec{id: "f1", image: threadkv, serviceIP: l.ServiceIP(1), listen: l.IP("b") + ":7100",
		extra: []string{"--annotation", "io.rrc.skip-idle=false"}}
	rl.startPair(ctx, t, good)

	t.Run("forged primaries refused by the backup", func(t *testing.T) {
		other, err := pki.Generate(filepath.Join(t.TempDir(), "other"), l.IP("a"))
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name    string
			cert    *pki.Files // nil: plain TCP garbage
			wantLog string     // in the backup's refusal line
		}{
			// The genuine primary's name, signed by a CA the backup does not trust.
			{"certificate of another CA", ptr(other.Hosts[l.IP("a")]), "certificate signed by unknown authority"},
			// The backup's CA, but the client host's certificate.
			{"certificate of the right CA for another name", ptr(rl.pki.Hosts[l.IP("client")]), "is not for the expected peer"},
			{"plain TCP garbage", nil, "first record does not look like a TLS handshake"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := waitStatus(t, l, "b", good.id, "in sync", 5*time.Second, isState(replication.StateInSync))
				offset := logSize(t, l, "b")
				nc, err := lab.DialInNetns(l.Netns("client"), good.listen)
				if err != nil {
					t.Fatalf("connect to the backup's shim: %v", err)
				}
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(5 * time.Second))
				var got []byte
				if tc.cert == nil {
					nc.Write([]byte("GET / HTTP/1.0\r\n\r\n\x16\x03\x01garbage"))
					got, err = io.ReadAll(nc)
					// A TLS alert record at most; then the connection ends.
					if err != nil || len(got) > 7 {
						t.Errorf("backup's answer to garbage: %q, %v; want at most an alert and a close", got, err)
					}
				} else {
					cert, err := tls.LoadX509KeyPair(tc.cert.CertFile, tc.cert.KeyFile)
					if err != nil {
						t.Fatal(err)
					}
					c := tls.Client(nc, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
						InsecureSkipVerify: true}) // the forger does not care who the backup is
					// With TLS 1.3 the client's handshake ends before the server
					// has checked the client's certificate: the refusal is the
					// first read.
					herr := c.Handshake()
					n, rerr := c.Read(make([]byte, 1))
					t.Logf("forged client: handshake %v; read %d bytes, %v", herr, n, rerr)
					if n != 0 || rerr == nil || errors.Is(rerr, os.ErrDeadlineExceeded) {
						t.Errorf("forged client was not refused: read %d bytes, %v", n, rerr)
					}
				}
				line := waitLog(t, l, "b", offset, 5*time.Second, "peer refused: TLS handshake failed", "pair="+good.id, tc.wantLog)
				t.Logf("backup's log: %s", line)
				// The genuine pair did not notice.
				waitStatus(t, l, "b", good.id, "later commits", 5*time.Second, func(s status.Published) bool {
					return s.Engine.State == replication.StateInSync && s.Engine.CommittedEpoch > before.Engine.CommittedEpoch+2
				})
				waitStatus(t, l, "a", good.id, "primary still in sync", time.Second, isState(replication.StateInSync))
			})
		}
		if out := rrcctl(t, l, rl.bin, rl.dir, "b"); !rrcctlSays(out, good.id, "in-sync") {
			t.Errorf("rrcctl status on b after the forged connections:\n%s", out)
		}
	})

	t.Run("forged backup gets nothing", func(t *testing.T) {
		a := host{t: t, lab: l, name: "a"}
		self, err := pki.GenerateSelfSigned(filepath.Join(t.TempDir(), "self"), l.IP("client"))
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			id, name string
			cert     pki.Files
			peerName string // io.rrc.peer-name; "" = the host of io.rrc.peer
			wantWhy  string
		}{
			{"f2", "self-signed certificate", self, "", "certificate signed by unknown authority"},
			{"f3", "certificate of the right CA for another name", rl.pki.Hosts[l.IP("client")], l.IP("b"), "not " + l.IP("b")},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				fake := listenForged(t, l.Netns("client"), fmt.Sprintf("%s:%d", l.IP("client"), 7300+i), tc.cert)
				serviceIP := l.ServiceIP(3 + i)
				args := []string{"run", "-d", "--runtime", rrc, "--annotation", "io.rrc.role=primary",
					"--annotation", "io.rrc.peer=" + fake.addr, "--annotation", "io.rrc.service-ip=" + serviceIP + "/24",
					"--annotation", "io.rrc.service-link=eth0"}
				if tc.peerName != "" {
					args = append(args, "--annotation", "io.rrc.peer-name="+tc.peerName)
				}
				t.Cleanup(func() { a.cleanup(tc.id) })
				a.must(ctx, append(args, threadkv, tc.id)...)
				st := waitStatus(t, l, "a", tc.id, "refusal of the backup", 10*time.Second, func(s status.Published) bool {
					return fake.attempts.Load() >= 2 && strings.Contains(s.Engine.Reason, tc.wantWhy)
				})
				t.Logf("%s: %s: %s", tc.id, st.Engine.State, st.Engine.Reason)
				if st.Engine.State != replication.StateStarting && st.Engine.State != replication.StateSyncing {
					t.Errorf("state %s, want starting or syncing", st.Engine.State)
				}
				if !strings.Contains(st.Engine.Reason, "output held") || st.Engine.CommittedEpoch != 0 {
					t.Errorf("status does not say the output is held, or something was committed: %+v", st.Engine)
				}
				if n, b := fake.handshakes.Load(), fake.bytes.Load(); n != 0 || b != 0 {
					t.Errorf("forged backup: %d completed handshakes, %d bytes received; want none", n, b)
				}
				if c, err := lab.DialInNetnsTimeout(l.Netns("client"), serviceIP+":6379", 2*time.Second); err == nil {
					c.Close()
					t.Errorf("connected to a primary whose output should be held")
				}
				out := rrcctl(t, l, rl.bin, rl.dir, "a")
				t.Logf("rrcctl status on a:\n%s", out)
				if !rrcctlSays(out, tc.id, "primary") || !strings.Contains(out, tc.id+": ") || !strings.Contains(out, tc.wantWhy) {
					t.Errorf("rrcctl status does not say why %s does not replicate:\n%s", tc.id, out)
				}
				if code := a.killAndDelete(ctx, tc.id, "KILL"); code != 128+9 {
					t.Errorf("exit status %d, want %d", code, 128+9)
				}
				nothingLeft(t, l, "a", tc.id)
				t.Logf("forged backup: %d connection attempts, all refused by the primary (%s)", fake.attempts.Load(), fake.lastErr())
			})
		}
		waitStatus(t, l, "b", good.id, "genuine pair in sync", 5*time.Second, isState(replication.StateInSync))
	})

	t.Run("backup of another image refused", func(t *testing.T) {
		// The same pair name, each side's own image: the backup would
		// restore the primary's memory onto other files.
		other := pairSpec{id: "img1", image: redis, serviceIP: l.ServiceIP(9), listen: l.IP("b") + ":7190"}
		rl.imageRefused(ctx, t, other, threadkv)
	})

	storeOf := func(id string) string {
		return filepath.Join(l.State("b"), "rrc", "checkpoints", l.Namespace("b"), id)
	}

	t.Run("corrupt checkpoint healed by a full checkpoint", func(t *testing.T) {
		// Later checkpoints come as deltas, whose unchanged blocks the backup
		// copies from the damaged one: its scrub finds the damage and the
		// primary is made to send a full checkpoint, which verifies.
		c := corruptCurrent(t, storeOf(good.id))
		var last error
		err := lab.WaitFor(15*time.Second, func() error {
			cur := readCurrent(t, storeOf(good.id))
			if cur.Epoch == c.Epoch {
				return fmt.Errorf("checkpoint %d still current", c.Epoch)
			}
			if err := cur.Verify(); err != nil {
				if now := readCurrent(t, storeOf(good.id)); now.Epoch == cur.Epoch {
					last = err
				}
				return err
			}
			t.Logf("checkpoint %d damaged, current now %d, which verifies", c.Epoch, cur.Epoch)
			return nil
		})
		if err != nil {
			t.Fatalf("no intact current checkpoint 15 s after the damage: %v (last stable one: %v)", err, last)
		}
		waitStatus(t, l, "b", good.id, "in sync after the damage", 5*time.Second, isState(replication.StateInSync))
	})

	t.Run("corrupt checkpoint refused at promotion; genuine pair fails over", func(t *testing.T) {
		b := host{t: t, lab: l, name: "b"}
		// One checkpoint only: the first, taken at start; the next would
		// come a minute later.
		one := pairSpec{id: "c1", image: threadkv, serviceIP: l.ServiceIP(2), listen: l.IP("b") + ":7101",
			extra: []string{"--annotation", "io.rrc.epoch=1m"}}
		rl.startPair(ctx, t, one)
		c := corruptCurrent(t, storeOf(one.id))
		if err := c.Verify(); !errors.Is(err, ckptstore.ErrCorrupt) {
			t.Fatalf("the corrupted checkpoint verifies: %v", err)
		}

		nc, err := lab.DialInNetns(l.Netns("client"), good.serviceIP+":6379")
		if err != nil {
			t.Fatalf("client connect: %v", err)
		}
		defer nc.Close()
		cl := lab.NewRedisWorkload(nc)
		if err := cl.Run(ctx, 10); err != nil {
			t.Fatalf("before the crash: %v", err)
		}
		if cur := readCurrent(t, storeOf(one.id)); cur.Epoch != c.Epoch {
			t.Fatalf("c1 committed epoch %d after the corrupted %d: the test needs a single checkpoint", cur.Epoch, c.Epoch)
		}
		offset := logSize(t, l, "b")
		// The genuine pair fails over.
		after, crashAt := failOver(ctx, t, l, good.id, cl)
		t.Logf("f1 failed over from epoch %d, total %.1f ms; first reply %s after the crash", after.Engine.Failover.Epoch,
			after.Engine.Failover.TotalMS, cl.FirstReplyAfter(crashAt).Round(time.Millisecond))

		// The corrupt one is refused, with the reason.
		st := waitStatus(t, l, "b", one.id, "promotion refused", 30*time.Second, isState(replication.StateFailed))
		t.Logf("c1: %s: %s", st.Engine.State, st.Engine.Reason)
		want := fmt.Sprintf("refusing to promote checkpoint %d", c.Epoch)
		if !strings.Contains(st.Engine.Reason, want) || !strings.Contains(st.Engine.Reason, "corrupt") {
			t.Errorf("reason %q, want %q and the corruption", st.Engine.Reason, want)
		}
		if st.Engine.Restored != nil {
			t.Errorf("something was restored: %+v", st.Engine.Restored)
		}
		waitLog(t, l, "b", offset, 5*time.Second, "promotion refused", "pair="+one.id, "checkpoint corrupt")
		out := rrcctl(t, l, rl.bin, rl.dir, "b")
		t.Logf("rrcctl status on b:\n%s", out)
		if !rrcctlSays(out, one.id, "failed") || !strings.Contains(out, "corrupt") || !rrcctlSays(out, good.id, "primary-after-failover") {
			t.Errorf("rrcctl status on b does not show c1 failed (corrupt) and f1 promoted:\n%s", out)
		}
		// Nothing answers for c1: its service link stays down.
		if c, err := lab.DialInNetnsTimeout(l.Netns("client"), one.serviceIP+":6379", 2*time.Second); err == nil {
			c.Close()
			t.Errorf("something answers at c1's service address after a refused promotion")
		}
		// A refused promotion ends the task: with 255 when nothing was
		// restored, killed (137) when what the restore made alongside the
		// verification was discarded, or however the damaged process
		// ended before that.
		if err := lab.WaitFor(10*time.Second, func() error {
			if st := b.taskStatus(ctx, one.id); st != "STOPPED" {
				return fmt.Errorf("task %s", st)
			}
			return nil
		}); err != nil {
			t.Errorf("c1's task after the refused promotion: %v", err)
		}
		if code := b.waitDeleted(ctx, one.id); code == 0 {
			t.Errorf("c1's exit status 0 after a refused promotion")
		} else {
			t.Logf("c1's exit status %d", code)
		}
		nothingLeft(t, l, "b", one.id)
		if code := b.killAndDelete(ctx, good.id, "TERM"); code != 0 {
			t.Errorf("f1's exit status after TERM %d, want 0", code)
		}
		nothingLeft(t, l, "b", good.id)
	})
}

func ptr[T any](v T) *T { return &v }

func isState(want replication.State) func(status.Published) bool {
	return func(s status.Published) bool { return s.Engine.State == want }
}

func logSize(t *testing.T, l *lab.Lab, h string) int64 {
	t.Helper()
	fi, err := os.Stat(l.Log(h))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// waitLog waits for a line of host h's containerd log, after offset, that
// contains every one of words, and returns it.
func waitLog(t *testing.T, l *lab.Lab, h string, offset int64, timeout time.Duration, words ...string) string {
	t.Helper()
	var found string
	err := lab.WaitFor(timeout, func() error {
		f, err := os.Open(l.Log(h))
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<30))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(line, w) }) {
				found = line
				return nil
			}
		}
		return fmt.Errorf("no line with %q", words)
	})
	if err != nil {
		t.Fatalf("containerd log of %s: %v", h, err)
	}
	return found
}

// readCurrent reads the manifest of the checkpoint store at root (the
// layout of replication/ckptstore) as the Checkpoint it names.
func readCurrent(t *testing.T, root string) ckptstore.Checkpoint {
	t.Helper()
	var m struct {
		Epoch  uint64 `json:"epoch"`
		Dir    string `json:"dir"`
		Size   uint64 `json:"size"`
		Files  uint32 `json:"files"`
		Digest string `json:"sha256"`
	}
	b, err := os.ReadFile(filepath.Join(root, "current.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	c := ckptstore.Checkpoint{Epoch: m.Epoch, Dir: filepath.Join(root, m.Dir), Size: m.Size, Files: m.Files}
	d, err := hex.DecodeString(m.Digest)
	if err != nil || len(d) != 32 {
		t.Fatalf("manifest digest %q", m.Digest)
	}
	copy(c.Digest[:], d)
	return c
}

// corruptCurrent flips bytes in the middle of the largest file of the
// current checkpoint of the store at root (CRIU's memory pages), in place:
// same name, size and mode. It returns the checkpoint it corrupted.
func corruptCurrent(t *testing.T, root string) ckptstore.Checkpoint {
	t.Helper()
	for range 20 {
		c := readCurrent(t, root)
		var biggest string
		var size int64
		// The callback never stops the walk, so WalkDir has no error to return.
		_ = filepath.WalkDir(c.Dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil && fi.Size() > size {
					biggest, size = p, fi.Size()
				}
			}
			return nil
		})
		if biggest == "" {
			continue // replaced by the next commit meanwhile
		}
		f, err := os.OpenFile(biggest, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		buf := make([]byte, 64)
		_, err = f.ReadAt(buf, size/2)
		if err == nil {
			for i := range buf {
				buf[i] ^= 0x5a
			}
			_, err = f.WriteAt(buf, size/2)
		}
		f.Close()
		if err != nil {
			t.Fatalf("corrupting %s: %v", biggest, err)
		}
		t.Logf("corrupted %d bytes at %d of %s (%d bytes), checkpoint %d", len(buf), size/2, biggest, size, c.Epoch)
		return c
	}
	t.Fatalf("no checkpoint to corrupt in %s", root)
	return ckptstore.Checkpoint{}
}

// forgedBackup is a TLS listener posing as a backup.
type forgedBackup struct {
	addr       string
	attempts   atomic.Int64 // connections accepted
	handshakes atomic.Int64 // TLS handshakes completed
	bytes      atomic.Int64 // application bytes received
	mu         sync.Mutex
	err        error // last handshake error
}

func (f *forgedBackup) lastErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// listenForged listens on addr in the network namespace nsPath with cert
// and counts what primaries send it until the test ends.
func listenForged(t *testing.T, nsPath, addr string, cert pki.Files) *forgedBackup {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenInNetns(nsPath, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &forgedBackup{addr: addr}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			f.attempts.Add(1)
			go func() {
				defer raw.Close()
				raw.SetDeadline(time.Now().Add(5 * time.Second))
				c := tls.Server(raw, cfg)
				if err := c.Handshake(); err != nil {
					f.mu.Lock()
					f.err = err
					f.mu.Unlock()
					return
				}
				f.handshakes.Add(1)
				n, _ := io.Copy(io.Discard, c)
				f.bytes.Add(n)
			}()
		}
	}()
	return f
}

// listenInNetns opens a TCP listener inside the network namespace at
// nsPath (the socket stays there; the thread is switched back).
func listenInNetns(nsPath, addr string) (ln net.Listener, err error) {
	err = launch.InNetns(nsPath, func() error {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}
