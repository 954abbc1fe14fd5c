// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/replication/peertls/pki"
	"github.com/iorrc/rrc/replication/wire"

	"github.com/iorrc/rrc/test/prereq"
)

const (
	primaryName = "primary.rrc.test"
	backupName  = "backup.rrc.test"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
}

func loadCreds(t testing.TB, f pki.Files) *peertls.Credentials {
	t.Helper()
	c, err := peertls.Load(f.CAFile, f.CertFile, f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// baseOptions tolerate 300 ms of silence: tests that are not about failure
// detection must not fail on a loaded machine or under the race detector.
// The detection tests set their own, tight, settings.
func baseOptions(t testing.TB, peerName string) Options {
	return Options{Pair: "redis-1", PeerName: peerName, Heartbeat: 30 * time.Millisecond, HeartbeatMisses: 10, Logger: testLogger(t)}
}

// startBackup runs a Receiver on a random loopback port.
func startBackup(t testing.TB, opts Options, creds *peertls.Credentials, storeDir string) (addr string, store *ckptstore.Store, failed chan PeerFailure, stop func()) {
	t.Helper()
	store, err := ckptstore.Open(storeDir, ckptstore.Options{Logger: opts.Logger})
	if err != nil {
		t.Fatal(err)
	}
	failed = make(chan PeerFailure, 4)
	var r *Receiver
	opts.OnPeerFailed = func(f PeerFailure) {
		if h := opts.hooks; h != nil && h.supersede != "" {
			r.Supersede(h.supersede)
		}
		failed <- f
	}
	r, err = NewReceiver(store, creds, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	return ln.Addr().String(), store, failed, stop
}

type env struct {
	pki     *pki.PKI
	primary *peertls.Credentials
	backup  *peertls.Credentials
}

func newEnv(t testing.TB) env {
	certs, err := pki.Generate(t.TempDir(), primaryName, backupName, "other.rrc.test")
	if err != nil {
		t.Fatal(err)
	}
	return env{pki: certs, primary: loadCreds(t, certs.Hosts[primaryName]), backup: loadCreds(t, certs.Hosts[backupName])}
}

func dial(t testing.TB, addr string, creds *peertls.Credentials, opts Options) *Sender {
	t.Helper()
	s, err := Dial(context.Background(), addr, creds, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeTree writes n random files of size bytes each, plus an empty one.
// The data comes from a Go PRNG, not crypto/rand: a multi-megabyte
// vgetrandom call cannot be preempted and stalls the whole test binary's
// garbage collector, heartbeats included.
func writeTree(t testing.TB, dir string, n, size int) {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{byte(n), byte(size)})
	for i := 0; i < n; i++ {
		b := make([]byte, size+i)
		rng.Read(b)
		p := filepath.Join(dir, fmt.Sprintf("sub%d", i%2), fmt.Sprintf("pages-%d.img", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.img"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sameTree(t *testing.T, want, got string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs (%v)", rel, err)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("no files compared")
	}
}

func checkpoint(epoch uint64, dirs ...string) Checkpoint {
	c := Checkpoint{Epoch: epoch}
	for i, d := range dirs {
		c.Sources = append(c.Sources, Source{Prefix: []string{"criu", "fs"}[i], FS: os.DirFS(d)})
	}
	return c
}

func sendAndWait(t *testing.T, s *Sender, c Checkpoint) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.Send(ctx, c); err != nil {
		t.Fatalf("Send %d: %v", c.Epoch, err)
	}
	return s.WaitAck(ctx, c.Epoch)
}

func TestCheckpointTransfer(t *testing.T) {
	e := newEnv(t)
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	var acks atomic.Int32
	opts := baseOptions(t, backupName)
	opts.OnAck = func(a Ack) { acks.Add(1) }
	s := dial(t, addr, e.primary, opts)
	if s.BackupCommitted() != 0 {
		t.Fatalf("fresh backup reports %d", s.BackupCommitted())
	}
	criu, delta := t.TempDir(), t.TempDir()
	writeTree(t, criu, 6, 700<<10) // ~4 MB
	writeTree(t, delta, 2, 1000)
	if err := sendAndWait(t, s, checkpoint(1, criu, delta)); err != nil {
		t.Fatal(err)
	}
	cur, ok := store.Current()
	if !ok || cur.Epoch != 1 || s.AckedEpoch() != 1 || acks.Load() != 1 {
		t.Fatalf("current %+v, acked %d, acks %d", cur, s.AckedEpoch(), acks.Load())
	}
	sameTree(t, criu, filepath.Join(cur.Dir, "criu"))
	sameTree(t, delta, filepath.Join(cur.Dir, "fs"))

	// Out-of-order epochs are refused by the Sender before anything is sent.
	if _, err := s.Send(context.Background(), checkpoint(1, criu)); !errors.Is(err, ErrEpochOrder) {
		t.Fatalf("epoch repeated: %v", err)
	}
	// Next epoch commits and replaces the previous one.
	if err := sendAndWait(t, s, checkpoint(2, criu)); err != nil {
		t.Fatal(err)
	}
	if cur, _ := store.Current(); cur.Epoch != 2 {
		t.Fatalf("current %d", cur.Epoch)
	}
	// The RTT comes from echoed heartbeats (every 30 ms): wait for one.
	deadline := time.Now().Add(2 * time.Second)
	for s.RTT() <= 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.RTT() <= 0 {
		t.Error("no RTT measured within 2 s of heartbeats")
	}
}

func TestEpochBelowBackupRefused(t *testing.T) {
	e := newEnv(t)
	storeDir := t.TempDir()
	addr, _, _, stop := startBackup(t, baseOptions(t, primaryName), e.backup, storeDir)
	src := t.TempDir()
	writeTree(t, src, 2, 100)
	s := dial(t, addr, e.primary, baseOptions(t, backupName))
	if err := sendAndWait(t, s, checkpoint(5, src)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	stop()
	// A restarted backup tells a new primary where it stands; a new session
	// with a stale epoch is refused locally.
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, storeDir)
	s = dial(t, addr, e.primary, baseOptions(t, backupName))
	if s.BackupCommitted() != 5 {
		t.Fatalf("backup committed %d", s.BackupCommitted())
	}
	if _, err := s.Send(context.Background(), checkpoint(3, src)); !errors.Is(err, ErrEpochOrder) {
		t.Fatalf("stale epoch: %v", err)
	}
	if err := sendAndWait(t, s, checkpoint(6, src)); err != nil || store.CurrentEpoch() != 6 {
		t.Fatalf("epoch 6: %v, current %d", err, store.CurrentEpoch())
	}
}

func TestEpochOrderEnforcedByBackup(t *testing.T) {
	// A primary that bypasses its own check (e.g. a bug or a restart with
	// lost state) is refused by the backup's store with an epoch-order Nack.
	e := newEnv(t)
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	src := t.TempDir()
	writeTree(t, src, 1, 100)
	s := dial(t, addr, e.primary, baseOptions(t, backupName))
	if err := sendAndWait(t, s, checkpoint(4, src)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = dial(t, addr, e.primary, baseOptions(t, backupName))
	s.lastSent = 0 // forget what the Hello said
	err := sendAndWait(t, s, checkpoint(2, src))
	var nack *NackError
	if !errors.As(err, &nack) || nack.Code != wire.CodeEpochOrder {
		t.Fatalf("got %v, want an epoch-order Nack", err)
	}
	if store.CurrentEpoch() != 4 {
		t.Fatalf("current %d", store.CurrentEpoch())
	}
}

func TestCorruptChunkRejected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hooks func(*testHooks)
		nack  bool // else: the connection is closed on a checksum error
	}{
		{"content (digest)", func(h *testHooks) {
			h.chunk = func(c *wire.CheckpointChunk) {
				if c.Offset > 0 {
					c.Data[7] ^= 0x40
				}
			}
		}, true},
		{"frame (CRC32C)", func(h *testHooks) {
			n := 0
			h.frame = func(t wire.Type, b []byte) {
				if t == wire.TypeCheckpointChunk {
					if n++; n == 3 {
						b[len(b)-1] ^= 1
					}
				}
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
			src := t.TempDir()
			writeTree(t, src, 3, 300<<10)
			good := dial(t, addr, e.primary, baseOptions(t, backupName))
			if err := sendAndWait(t, good, checkpoint(1, src)); err != nil {
				t.Fatal(err)
			}
			good.Close()
			opts := baseOptions(t, backupName)
			opts.hooks = &testHooks{}
			tc.hooks(opts.hooks)
			bad := dial(t, addr, e.primary, opts)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Send itself may fail: the backup closes the connection at
			// the first bad frame.
			_, err := bad.Send(ctx, checkpoint(2, src))
			if err == nil {
				err = bad.WaitAck(ctx, 2)
			}
			var nack *NackError
			if tc.nack && (!errors.As(err, &nack) || nack.Code != wire.CodeCorrupt) {
				t.Fatalf("got %v, want a corrupt Nack", err)
			}
			if !tc.nack && err == nil {
				t.Fatal("corrupt frame acknowledged")
			}
			cur, _ := store.Current()
			if cur.Epoch != 1 {
				t.Fatalf("current is %d", cur.Epoch)
			}
			sameTree(t, src, filepath.Join(cur.Dir, "criu"))
			waitNoStaging(t, store, cur.Dir)
		})
	}
}

func waitNoStaging(t *testing.T, store *ckptstore.Store, curDir string) {
	t.Helper()
	staging := filepath.Join(filepath.Dir(filepath.Dir(curDir)), "staging")
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, _ := os.ReadDir(staging)
		if len(ents) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("staging not removed: %v", ents)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTruncatedTransferKeepsPrevious(t *testing.T) {
	e := newEnv(t)
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	src := t.TempDir()
	writeTree(t, src, 4, 1<<20)
	s := dial(t, addr, e.primary, baseOptions(t, backupName))
	if err := sendAndWait(t, s, checkpoint(1, src)); err != nil {
		t.Fatal(err)
	}
	// Cut the connection after a few chunks of epoch 2.
	opts := baseOptions(t, backupName)
	opts.hooks = &testHooks{}
	var n atomic.Int32
	var cut *Sender
	ready := make(chan struct{})
	opts.hooks.frame = func(typ wire.Type, b []byte) {
		if typ == wire.TypeCheckpointChunk && n.Add(1) == 5 {
			<-ready
			cut.s.conn.Close()
		}
	}
	s.Close()
	cut = dial(t, addr, e.primary, opts)
	close(ready)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cut.Send(ctx, checkpoint(2, src)) // may or may not see the error
	if err := cut.WaitAck(ctx, 2); err == nil {
		t.Fatal("truncated checkpoint acknowledged")
	}
	cur, _ := store.Current()
	if cur.Epoch != 1 {
		t.Fatalf("current is %d", cur.Epoch)
	}
	waitNoStaging(t, store, cur.Dir)
	sameTree(t, src, filepath.Join(cur.Dir, "criu"))
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	other, err := pki.Generate(t.TempDir(), primaryName, backupName)
	if err != nil {
		t.Fatal(err)
	}
	self, err := pki.GenerateSelfSigned(t.TempDir(), primaryName)
	if err != nil {
		t.Fatal(err)
	}
	selfBackup, err := pki.GenerateSelfSigned(t.TempDir(), backupName)
	if err != nil {
		t.Fatal(err)
	}
	// mixed: own cert from the wrong CA, but trusting the right one
	wrongCA := loadCreds(t, pki.Files{CAFile: e.pki.CAFile, CertFile: other.Hosts[primaryName].CertFile, KeyFile: other.Hosts[primaryName].KeyFile})
	wrongCABackup := loadCreds(t, pki.Files{CAFile: e.pki.CAFile, CertFile: other.Hosts[backupName].CertFile, KeyFile: other.Hosts[backupName].KeyFile})
	selfP := loadCreds(t, pki.Files{CAFile: e.pki.CAFile, CertFile: self.CertFile, KeyFile: self.KeyFile})
	selfB := loadCreds(t, pki.Files{CAFile: e.pki.CAFile, CertFile: selfBackup.CertFile, KeyFile: selfBackup.KeyFile})
	otherHost := loadCreds(t, e.pki.Hosts["other.rrc.test"])

	tests := []struct {
		name           string
		primary        *peertls.Credentials
		backup         *peertls.Credentials
		primaryExpects string // the backup's expected name
		backupExpects  string // the primary's expected name
		ok             bool
	}{
		{"ok", e.primary, e.backup, backupName, primaryName, true},
		{"primary cert from wrong CA", wrongCA, e.backup, backupName, primaryName, false},
		{"backup cert from wrong CA", e.primary, wrongCABackup, backupName, primaryName, false},
		{"primary self-signed", selfP, e.backup, backupName, primaryName, false},
		{"backup self-signed", e.primary, selfB, backupName, primaryName, false},
		{"primary is another host", otherHost, e.backup, backupName, primaryName, false},
		{"backup is another host", e.primary, otherHost, backupName, primaryName, false},
		{"primary expects another backup", e.primary, e.backup, "other.rrc.test", primaryName, false},
		{"backup expects another primary", e.primary, e.backup, backupName, "other.rrc.test", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, _, _, _ := startBackup(t, baseOptions(t, tc.backupExpects), tc.backup, t.TempDir())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := Dial(ctx, addr, tc.primary, baseOptions(t, tc.primaryExpects))
			if err == nil {
				// TLS 1.3: the client may finish before the server
				// rejects its certificate; the session must not live.
				select {
				case <-s.Done():
					err = s.Err()
				case <-time.After(500 * time.Millisecond):
				}
				s.Close()
			}
			if tc.ok != (err == nil) {
				t.Fatalf("ok=%v, got %v", tc.ok, err)
			}
		})
	}
}

func TestWrongPairRefused(t *testing.T) {
	e := newEnv(t)
	bopts := baseOptions(t, primaryName)
	bopts.Image = "sha256:aaaa"
	addr, _, _, _ := startBackup(t, bopts, e.backup, t.TempDir())
	opts := baseOptions(t, backupName)
	opts.Image = bopts.Image
	opts.Pair = "memcached-7"
	if s, err := Dial(context.Background(), addr, e.primary, opts); err == nil {
		s.Close()
		t.Fatal("wrong pair accepted")
	}
	opts = baseOptions(t, backupName)
	opts.Image = bopts.Image
	opts.Mode = wire.ModeHybrid
	if s, err := Dial(context.Background(), addr, e.primary, opts); err == nil {
		s.Close()
		t.Fatal("mode mismatch accepted")
	}
	for _, image := range []string{"sha256:bbbb", ""} { // another image; none where the backup has one
		opts = baseOptions(t, backupName)
		opts.Image = image
		s, err := Dial(context.Background(), addr, e.primary, opts)
		if err == nil {
			s.Close()
			t.Fatalf("image %q accepted by a backup of image sha256:aaaa", image)
		}
		if !strings.Contains(err.Error(), "same image") {
			t.Errorf("image %q refused, but not for the image: %v", image, err)
		}
	}
}

func TestHeartbeatLossDetected(t *testing.T) {
	e := newEnv(t)
	bopts := baseOptions(t, primaryName)
	bopts.Heartbeat, bopts.HeartbeatMisses = 20*time.Millisecond, 3
	addr, _, backupSaw, _ := startBackup(t, bopts, e.backup, t.TempDir())
	popts := baseOptions(t, backupName)
	popts.Heartbeat, popts.HeartbeatMisses = 20*time.Millisecond, 3
	popts.hooks = &testHooks{}
	s := dial(t, addr, e.primary, popts)
	time.Sleep(5 * popts.Heartbeat) // healthy for a while: no detection
	select {
	case f := <-backupSaw:
		t.Fatalf("false detection: %+v", f)
	default:
	}
	// The primary process goes silent: nothing more leaves it, but its
	// kernel (this test's) still acknowledges the backup's heartbeats, so
	// the backup gives it ProcessGrace timeouts. (A dead host, which
	// acknowledges nothing either, is detected after one timeout: see
	// TestFailureDetector and the lab's failover tests.)
	popts.hooks.silence.Store(true)
	cutAt := time.Now()
	timeout := popts.Heartbeat * time.Duration(popts.HeartbeatMisses)
	low, limit := ProcessGrace*timeout, ProcessGrace*timeout+popts.Heartbeat
	select {
	case f := <-backupSaw:
		// Detection is measured from the last frame heard: the frame that
		// was in flight when the link was cut may still have arrived.
		if d := f.DetectedAt.Sub(f.LastHeard); d > limit || d < low || !strings.Contains(f.Reason, "host still acknowledges") {
			t.Fatalf("detected %s after the last frame (%s), want within [%s, %s] for a silent process on a live host", d, f.Reason, low, limit)
		}
		if f.LastHeard.After(cutAt.Add(popts.Heartbeat)) || f.Pair != "redis-1" {
			t.Fatalf("failure %+v", f)
		}
		t.Logf("backup detected the failure %s after the cut, %s after the last frame", f.DetectedAt.Sub(cutAt), f.DetectedAt.Sub(f.LastHeard))
	case <-time.After(2 * time.Second):
		t.Fatal("failure not detected")
	}
	// The backup closed the connection; the primary sees its end.
	select {
	case <-s.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("primary's session still up")
	}
}

// TestSupersededPrimaryIsTold: the backup declares a primary failed that
// is only silent (its process stalls; its kernel and its reader work) and
// takes over: the primary learns it before the connection ends, so that
// it stops instead of going degraded next to the promoted backup.
func TestSupersededPrimaryIsTold(t *testing.T) {
	e := newEnv(t)
	bopts := baseOptions(t, primaryName)
	bopts.Heartbeat, bopts.HeartbeatMisses = 10*time.Millisecond, 3
	bopts.hooks = &testHooks{supersede: "promoting epoch 7"}
	addr, _, backupSaw, _ := startBackup(t, bopts, e.backup, t.TempDir())
	popts := baseOptions(t, backupName)
	// The silenced primary sends nothing, so its kernel sees no ACKs: it
	// must not give up on a backup that stalls under load meanwhile.
	popts.Heartbeat, popts.HeartbeatMisses = 10*time.Millisecond, 100
	popts.hooks = &testHooks{}
	told := make(chan string, 1)
	popts.OnSuperseded = func(reason string) { told <- reason }
	s := dial(t, addr, e.primary, popts)
	time.Sleep(5 * popts.Heartbeat) // the Hello written, the session running
	popts.hooks.silence.Store(true)
	select {
	case <-backupSaw:
	case <-time.After(3 * time.Second):
		t.Fatal("backup did not declare the silent primary failed")
	}
	select {
	case reason := <-told:
		if reason != "promoting epoch 7" {
			t.Errorf("told %q", reason)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("primary not told it was superseded")
	}
	<-s.Done()
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "superseded by the backup") {
		t.Errorf("session ended with %v", err)
	}
}

func TestHeartbeatsFlowDuringLargeTransfer(t *testing.T) {
	prereq.Long(t, "50 MB transfer")
	// The design's defaults, 30 ms × 3: the transfer takes several times
	// the 90 ms timeout, so heartbeats stuck behind it would be detected.
	// (10 ms × 3 passes alone, but not always with three copies of this
	// test saturating the two cores: then the *sending* side's heartbeat
	// goroutine waits for a processor, which no detector can tell from a
	// failure. Local read-side delays are excluded; see FailureDetector.)
	const interval = 30 * time.Millisecond
	e := newEnv(t)
	bopts := baseOptions(t, primaryName)
	bopts.Heartbeat, bopts.HeartbeatMisses = interval, 3
	var last, maxGap atomic.Int64 // heartbeats from the primary, seen by the backup
	var count atomic.Int32
	bopts.hooks = &testHooks{frameIn: func(f wire.Frame) {
		if f.Type == wire.TypeHeartbeat {
			count.Add(1)
			now := time.Now().UnixNano()
			if prev := last.Swap(now); prev != 0 && now-prev > maxGap.Load() {
				maxGap.Store(now - prev)
			}
		}
	}}
	addr, store, backupSaw, _ := startBackup(t, bopts, e.backup, t.TempDir())
	popts := baseOptions(t, backupName)
	popts.Heartbeat, popts.HeartbeatMisses = interval, 3
	primarySaw := make(chan PeerFailure, 1)
	popts.OnPeerFailed = func(f PeerFailure) { primarySaw <- f }
	src := t.TempDir()
	writeTree(t, src, 5, 10<<20) // 50 MB
	s := dial(t, addr, e.primary, popts)
	start := time.Now()
	before := count.Load()
	if err := sendAndWait(t, s, checkpoint(1, src)); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	during := count.Load() - before
	t.Logf("50 MB committed in %s; %d heartbeats from the primary arrived meanwhile; longest gap at the backup: %s",
		took, during, time.Duration(maxGap.Load()))
	if took > 3*interval && during < 2 {
		t.Errorf("only %d heartbeats during a %s transfer", during, took)
	}
	select {
	case f := <-backupSaw:
		t.Fatalf("backup falsely detected a failure: %+v", f)
	case f := <-primarySaw:
		t.Fatalf("primary falsely detected a failure: %+v", f)
	default:
	}
	if store.CurrentEpoch() != 1 || s.Err() != nil {
		t.Fatalf("current %d, session %v", store.CurrentEpoch(), s.Err())
	}
}

func TestSendCancelledAborts(t *testing.T) {
	e := newEnv(t)
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	src := t.TempDir()
	writeTree(t, src, 2, 2<<20)
	ctx, cancel := context.WithCancel(context.Background())
	var armed atomic.Bool
	opts := baseOptions(t, backupName)
	opts.hooks = &testHooks{chunk: func(c *wire.CheckpointChunk) {
		if armed.Load() {
			cancel()
		}
	}}
	s := dial(t, addr, e.primary, opts)
	if err := sendAndWait(t, s, checkpoint(1, src)); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if _, err := s.Send(ctx, checkpoint(2, src)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send: %v", err)
	}
	armed.Store(false)
	// The session survives; the next epoch commits.
	if err := sendAndWait(t, s, checkpoint(3, src)); err != nil {
		t.Fatal(err)
	}
	if store.CurrentEpoch() != 3 {
		t.Fatalf("current %d", store.CurrentEpoch())
	}
}

func TestPrimaryReconnectReplacesConnection(t *testing.T) {
	e := newEnv(t)
	addr, store, _, _ := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	src := t.TempDir()
	writeTree(t, src, 2, 1000)
	first := dial(t, addr, e.primary, baseOptions(t, backupName))
	if err := sendAndWait(t, first, checkpoint(1, src)); err != nil {
		t.Fatal(err)
	}
	second := dial(t, addr, e.primary, baseOptions(t, backupName))
	select {
	case <-first.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("old connection not dropped")
	}
	if second.BackupCommitted() != 1 {
		t.Fatalf("backup committed %d", second.BackupCommitted())
	}
	if err := sendAndWait(t, second, checkpoint(2, src)); err != nil || store.CurrentEpoch() != 2 {
		t.Fatalf("%v, current %d", err, store.CurrentEpoch())
	}
}

func TestServeStopsWithConnectedPrimary(t *testing.T) {
	e := newEnv(t)
	addr, _, _, stop := startBackup(t, baseOptions(t, primaryName), e.backup, t.TempDir())
	s := dial(t, addr, e.primary, baseOptions(t, backupName))
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return with a primary connected")
	}
	select {
	case <-s.Done():
		if s.Err() == nil {
			t.Fatal("Done without Err")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("primary did not see the end")
	}
}

// TestConnectionEnd: the backup learns how each connection ended — a
// goodbye (not lost, with its reason), or a close without one (lost) —
// with the last time it heard the primary and its own detection bound:
// the primary announced heartbeats every 2 ms, which must not make the
// backup's bound 6 ms.
func TestConnectionEnd(t *testing.T) {
	for _, tc := range []struct {
		name    string
		goodbye bool
	}{{"goodbye", true}, {"closed without goodbye", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			bopts := baseOptions(t, primaryName)
			bopts.Heartbeat, bopts.HeartbeatMisses = 50*time.Millisecond, 3
			ended := make(chan Disconnect, 1)
			bopts.OnDisconnected = func(d Disconnect) { ended <- d }
			addr, _, _, _ := startBackup(t, bopts, e.backup, t.TempDir())
			popts := baseOptions(t, backupName)
			popts.Heartbeat, popts.HeartbeatMisses = 2*time.Millisecond, 30 // its own bound covers the backup's 50 ms
			s := dial(t, addr, e.primary, popts)
			time.Sleep(20 * time.Millisecond)
			closedAt := time.Now()
			if tc.goodbye {
				if err := s.Goodbye(wire.GoodbyeDeleted, "container deleted"); err != nil {
					t.Fatal(err)
				}
			} else {
				s.s.conn.Close() // as the kernel of a killed process does
			}
			var d Disconnect
			select {
			case d = <-ended:
			case <-time.After(2 * time.Second):
				t.Fatal("the backup did not see the connection end")
			}
			if tc.goodbye {
				if d.Lost || d.Goodbye == nil || d.Goodbye.Reason != wire.GoodbyeDeleted || d.Goodbye.Message != "container deleted" {
					t.Fatalf("after a goodbye: %+v (goodbye %+v)", d, d.Goodbye)
				}
			} else if !d.Lost || d.Goodbye != nil || !errors.Is(d.Err, ErrConnectionLost) {
				t.Fatalf("after a close without goodbye: %+v", d)
			}
			if d.Timeout != 150*time.Millisecond {
				t.Errorf("detection bound %s, want the backup's own 50ms × 3", d.Timeout)
			}
			if d.LastHeard.After(time.Now()) || closedAt.Sub(d.LastHeard) > 50*time.Millisecond {
				t.Errorf("last heard %s, closed at %s", d.LastHeard, closedAt)
			}
		})
	}
}

// TestPeerHeartbeatBeyondBoundRefused: a primary announcing heartbeats
// rarer than the backup's whole detection bound would make every gap a
// failure, or let it stretch the bound; the backup refuses it.
func TestPeerHeartbeatBeyondBoundRefused(t *testing.T) {
	e := newEnv(t)
	bopts := baseOptions(t, primaryName)
	bopts.Heartbeat, bopts.HeartbeatMisses = 30*time.Millisecond, 3
	var connected atomic.Bool
	bopts.OnConnected = func() { connected.Store(true) }
	addr, _, _, _ := startBackup(t, bopts, e.backup, t.TempDir())
	popts := baseOptions(t, backupName)
	popts.Heartbeat = time.Second
	var told atomic.Value
	popts.hooks = &testHooks{frameIn: func(f wire.Frame) {
		if f.Type == wire.TypeError {
			if e, err := wire.DecodeError(f.Payload); err == nil {
				told.Store(e.Message)
			}
		}
	}}
	s := dial(t, addr, e.primary, popts) // its side of the handshake is done before the backup's check
	select {
	case <-s.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("a primary announcing 1s heartbeats was kept by a backup with a 90ms bound")
	}
	if msg, _ := told.Load().(string); connected.Load() || !strings.Contains(msg, "failure detection bound") {
		t.Fatalf("connected %v; the primary was told %q", connected.Load(), msg)
	}
}
