// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication/ckptstore"
	"github.com/iorrc/rrc/replication/peer"
)

func TestPromotionSequence(t *testing.T) {
	tests := []struct {
		name       string
		current    bool
		verifyErr  error
		restoreErr error
		networkErr error
		want       []string
		wantErr    bool
	}{
		{name: "stop, prepare, restore the committed checkpoint, then the network", current: true,
			want: []string{"stop-receiving", "prepare-restore", "restore:7", "verified", "network-up"}},
		{name: "no committed checkpoint: nothing restored, network stays down",
			want: []string{"stop-receiving"}, wantErr: true},
		{name: "checkpoint corrupt on disk: what was restored meanwhile is discarded, network stays down", current: true, verifyErr: ckptstore.ErrCorrupt,
			want: []string{"stop-receiving", "prepare-restore", "restore:7", "verified", "discard:4242"}, wantErr: true},
		{name: "checkpoint corrupt and the restore failed: nothing to discard", current: true, verifyErr: ckptstore.ErrCorrupt, restoreErr: errors.New("criu failed"),
			want: []string{"stop-receiving", "prepare-restore", "restore:7", "verified"}, wantErr: true},
		{name: "restore fails: network stays down", current: true, restoreErr: errors.New("criu failed"),
			want: []string{"stop-receiving", "prepare-restore", "restore:7", "verified"}, wantErr: true},
		{name: "network fails after the restore", current: true, networkErr: errors.New("netlink"),
			want: []string{"stop-receiving", "prepare-restore", "restore:7", "verified", "network-up"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			restored := make(chan struct{})
			p := promotion{
				log: slog.Default(), now: time.Now,
				stopReceiving: func() { rec.add("stop-receiving") },
				current: func() (ckptstore.Checkpoint, bool) {
					return ckptstore.Checkpoint{Epoch: 7, Dir: "/nonexistent"}, tc.current
				},
				// The verification runs beside the restore; it ends after it
				// here, so that the steps have one order.
				verify: func(ckptstore.Checkpoint) error {
					<-restored
					rec.add("verified")
					return tc.verifyErr
				},
				restorer: fakeRestorer{rec: rec, err: tc.restoreErr, done: restored},
				network:  fakeNetwork{rec: rec, err: tc.networkErr},
			}
			last := time.Now().Add(-100 * time.Millisecond)
			res, tm, err := p.run(context.Background(), peer.PeerFailure{LastHeard: last, DetectedAt: last.Add(95 * time.Millisecond)})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if got := rec.list(); !slices.Equal(got, tc.want) {
				t.Errorf("steps %v, want %v", got, tc.want)
			}
			if tm.DetectionMS != 95 {
				t.Errorf("detection %v ms, want 95", tm.DetectionMS)
			}
			if err == nil && (res.Pid != 4242 || res.Epoch != 7 || tm.Epoch != 7 || tm.TotalMS < 100) {
				t.Errorf("result %+v, timings %+v", res, tm)
			}
		})
	}
}

type fakeNetwork struct {
	rec *recorder
	err error
}

func (n fakeNetwork) PrepareRestore(context.Context) error { n.rec.add("prepare-restore"); return nil }
func (n fakeNetwork) Promote(context.Context) error        { n.rec.add("network-up"); return n.err }
