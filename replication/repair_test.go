// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/peer"
	"github.com/iorrc/rrc/replication/peertls/pki"
)

// TestPrimaryRepairs drives a Primary on fakes through a lost backup: it
// goes degraded (everything released), dials until a backup answers, holds
// output again before the full checkpoint that brings the new backup in
// sync, and numbers epochs above what that backup holds.
func TestPrimaryRepairs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committed uint64 // what the second backup holds when it answers
		wantWire  uint64 // the first epoch sent to it
	}{
		{name: "same backup, behind", committed: 1, wantWire: 2},
		{name: "new backup, empty", committed: 0, wantWire: 2},
		{name: "backup ahead of the primary's numbering", committed: 40, wantWire: 41},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			var mu sync.Mutex
			var senders []*fakeSender
			dials := 0
			p, err := NewPrimary(context.Background(), PrimaryOptions{
				Config:  Config{Role: RolePrimary, Pair: "pair1", Peer: "192.0.2.2:7000", Epoch: time.Minute},
				Packets: &fakePackets{rec: rec, failed: make(chan error, 1)}, WorkDir: t.TempDir(),
				Dial: func(_ context.Context, o peer.Options) (CheckpointSender, error) {
					mu.Lock()
					defer mu.Unlock()
					dials++
					if dials == 2 { // the first re-pairing attempt finds nobody
						rec.add("dial-refused")
						return nil, errors.New("connection refused")
					}
					s := &fakeSender{rec: rec, opts: o, done: make(chan struct{})}
					if dials > 2 {
						s.committed = tc.committed
					}
					senders = append(senders, s)
					return s, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close(context.Background()) })
			if err := p.Start(context.Background(), &fakeCheckpointer{rec: rec}); err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, "send:1")
			mu.Lock()
			first := senders[0]
			mu.Unlock()
			first.ack(1, nil)
			first.Close() // the backup went away
			rec.waitFor(t, "dial-refused")
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
				st := p.Status()
				if st.State == StateDegraded && strings.Contains(st.Reason, "re-pairing: attempt 1: connection refused") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("while re-pairing: state %q reason %q", st.State, st.Reason)
				}
			}
			send := fmt.Sprintf("send:%d", tc.wantWire)
			rec.waitFor(t, send)
			if st := p.Status(); st.State != StateSyncing || st.Repairs != 1 {
				t.Errorf("after re-pairing: state %q repairs %d", st.State, st.Repairs)
			}
			mu.Lock()
			second := senders[1]
			mu.Unlock()
			second.ack(tc.wantWire, nil)
			checkOrder(t, rec.list(), []string{"release-output:1", "close-peer", "release-all", "dial-refused", "resume:2",
				"hold", "freeze", "seal:2", "dump", "thaw", send, fmt.Sprintf("ack:%d", tc.wantWire), "release-output:2"}, nil)
			if st := p.Status(); st.State != StateInSync || st.CommittedEpoch != tc.wantWire || st.Reason != "" {
				t.Errorf("in sync again: state %q committed %d reason %q", st.State, st.CommittedEpoch, st.Reason)
			}
		})
	}
}

// TestBackupPromotesOnlyInSync: a primary failure is acted on only when a
// checkpoint of the current connection is committed.
func TestBackupPromotesOnlyInSync(t *testing.T) {
	for _, tc := range []struct {
		state       State
		wantPromote bool
		after       State
	}{
		{StateInSync, true, StatePromoting},
		{StateSyncing, false, StateDisconnected},
		{StateDisconnected, false, StateDisconnected},
		{StateStarting, false, StateStarting},
	} {
		t.Run(string(tc.state), func(t *testing.T) {
			rec := newRecorder()
			certs, err := pki.Generate(t.TempDir(), "backup")
			if err != nil {
				t.Fatal(err)
			}
			creds, err := certs.Hosts["backup"].Load()
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			b, err := StartBackup(context.Background(), BackupOptions{
				Config: Config{Role: RoleBackup, Pair: "p1", Listen: ln.Addr().String(), PeerName: "primary"},
				TLS:    creds, StoreDir: t.TempDir(), Listener: ln,
				Restorer: fakeRestorer{rec: rec}, Network: fakeNetwork{rec: rec},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close(context.Background()) })
			b.mu.Lock()
			b.sm.state = tc.state
			b.mu.Unlock()
			b.onPeerFailed(peer.PeerFailure{LastHeard: time.Now().Add(-time.Second), DetectedAt: time.Now(), Reason: "silent"})
			if st := b.Status(); st.State != tc.after && !(tc.wantPromote && st.State != tc.state) {
				t.Errorf("state after the failure %q, want %q", st.State, tc.after)
			}
			select {
			case <-b.Promoted():
				if !tc.wantPromote {
					t.Fatal("promoted")
				}
			case <-time.After(300 * time.Millisecond):
				if tc.wantPromote {
					t.Fatal("did not promote")
				}
			}
			if !tc.wantPromote && len(rec.list()) != 0 {
				t.Errorf("restore or network touched: %v", rec.list())
			}
		})
	}
}

// TestPrimaryStartUnprotected: a primary for a container that already
// serves (restored at a failover) releases its output at once, runs
// degraded while no backup answers, then holds output again and brings the
// backup in sync with a full checkpoint, as a re-pairing does.
func TestPrimaryStartUnprotected(t *testing.T) {
	rec := newRecorder()
	var mu sync.Mutex
	var backup *fakeSender
	dials := 0
	p, err := NewPrimary(context.Background(), PrimaryOptions{
		Config:  Config{Role: RolePrimary, Pair: "pair1", Peer: "192.0.2.1:7000", Epoch: time.Minute},
		Packets: &fakePackets{rec: rec, failed: make(chan error, 1)}, WorkDir: t.TempDir(),
		Dial: func(_ context.Context, o peer.Options) (CheckpointSender, error) {
			mu.Lock()
			defer mu.Unlock()
			if dials++; dials == 1 { // the new backup is not up yet
				rec.add("dial-refused")
				return nil, errors.New("connection refused")
			}
			backup = &fakeSender{rec: rec, opts: o, done: make(chan struct{})}
			return backup, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	if err := p.StartUnprotected(context.Background(), &fakeCheckpointer{rec: rec}, "took over at a failover"); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); st.State != StateDegraded || !strings.Contains(st.Reason, "took over at a failover") {
		t.Errorf("at start: state %q reason %q, want degraded", st.State, st.Reason)
	}
	rec.waitFor(t, "send:1")
	if st := p.Status(); st.State != StateSyncing || st.Repairs != 1 {
		t.Errorf("paired: state %q repairs %d", st.State, st.Repairs)
	}
	mu.Lock()
	b := backup
	mu.Unlock()
	b.ack(1, nil)
	for deadline := time.Now().Add(2 * time.Second); p.Status().State != StateInSync; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not in sync after the ack: %+v", p.Status())
		}
	}
	checkOrder(t, rec.list(), []string{"release-all", "dial-refused", "resume:1", "send:1", "ack:1", "release-output:1"}, nil)
	if err := p.StartUnprotected(context.Background(), &fakeCheckpointer{rec: rec}, "again"); err == nil {
		t.Error("a second start was accepted")
	}
}
