// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
)

func TestDescribe(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name                  string
		st                    status.Published
		state, committed, lag string
		details               []string
	}{
		{"in sync", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 7, LagMS: 104.4, Epochs: 8}},
			"in-sync", "7", "104ms", []string{"c: 8 epochs"}},
		{"waiting for the backup", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateStarting, Reason: "output held (fail closed) while waiting for the backup: refused"}},
			"starting", "-", "-", []string{"c: output held"}},
		{"after failover", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, State: replication.StatePrimaryAfterFailover, CommittedEpoch: 60,
			Failover: &replication.FailoverTimings{Epoch: 60, DetectionMS: 97, RestoreMS: 84.5, TotalMS: 188.4}, Restored: &replication.RestoredContainer{Pid: 42}}},
			"primary-after-failover", "60", "-", []string{"c: failover from epoch 60: detection 97.0 ms", "total 188.4 ms", "c: restored container pid 42"}},
		{"after hybrid failover", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, Mode: replication.ModeHybrid, State: replication.StatePrimaryAfterFailover, CommittedEpoch: 8,
			Failover: &replication.FailoverTimings{Epoch: 8, ReplayMS: 12.5, Replay: &replication.ReplayFigures{Records: 268, Inputs: 134, Outputs: 135, Reset: 1, Diverged: 1}}}},
			"primary-after-failover", "8", "-", []string{"c: replay of the log after the checkpoint: 12.5 ms, 268 records, 134 inputs fed, 135 outputs judged, 0 waits; connections reset: 1 (1 diverged, 0 pending); accepted after the checkpoint: 0 (0 translated)"}},
		{"degraded, re-pairing", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateDegraded, CommittedEpoch: 9, Epochs: 9,
			Reason: "backup failed: nothing from the peer for 91ms; re-pairing: attempt 3: connection refused"}},
			"degraded", "9", "-", []string{"c: backup failed", "re-pairing: attempt 3: connection refused"}},
		{"checkpoints failing", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateFailing, CommittedEpoch: 9, Epochs: 9, FailedEpochs: 12,
			ConsecutiveFailures: 12, LastFailure: "criu: unix socket /tmp/x.sock", Reason: "12 consecutive checkpoints failed in 1.2s, output held until one is acknowledged; last: criu: unix socket /tmp/x.sock"}},
			"failing", "9", "-", []string{"c: 12 consecutive checkpoints failed in 1.2s", "c: ALARM: 12 checkpoint(s) failed in a row, none acknowledged since; last: criu: unix socket /tmp/x.sock"}},
		{"one failure, below the bound", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 9, Epochs: 10, LagMS: 200,
			ConsecutiveFailures: 1, LastFailure: "criu: dump"}},
			"in-sync", "9", "200ms", []string{"c: ALARM: 1 checkpoint(s) failed in a row"}},
		{"idle ticks", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 9, Epochs: 9, IdleTicks: 40, LagMS: 4100}},
			"in-sync", "9", "4100ms", []string{"c: 40 tick(s) took no checkpoint: no packet in or out since the last committed one"}},
		{"re-paired", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 30, LagMS: 120, Epochs: 31, Repairs: 1}},
			"in-sync", "30", "120ms", []string{"c: re-paired with a backup 1 time(s)"}},
		{"backup disconnected", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, State: replication.StateDisconnected, CommittedEpoch: 12,
			Reason: "primary disconnected (EOF): not protected"}},
			"disconnected", "12", "-", []string{"c: primary disconnected (EOF): not protected"}},
		{"backup after a goodbye", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, State: replication.StateDisconnected, CommittedEpoch: 12,
			Reason: "the primary said goodbye (deleted: container c stopped on purpose (deleted)): it stopped replicating on purpose"}},
			"disconnected", "12", "-", []string{"c: the primary said goodbye (deleted"}},
		{"backup waiting out the bound", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, State: replication.StatePrimaryLost, CommittedEpoch: 12,
			Reason: "the connection ended without a goodbye (EOF); promoting at 12:00:00.09Z unless the primary reconnects"}},
			"primary-lost", "12", "-", []string{"c: the connection ended without a goodbye"}},
		{"redialled", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 30, LagMS: 120, Epochs: 31, Redials: 2}},
			"in-sync", "30", "120ms", []string{"c: connection to the backup lost and dialled again at once 2 time(s), output held"}},
		{"hybrid primary", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, Mode: replication.ModeHybrid, State: replication.StateInSync, CommittedEpoch: 4, Epochs: 4,
			Log: &replication.LogStatus{Records: 120, Bytes: 9000, Batches: 30, BytesPerSecond: 4500, Unacked: 2, OldestUnackedMS: 0.4, Appended: "4.12", Acked: "4.10"}}},
			"in-sync", "4", "0ms", []string{"c: hybrid mode log: 120 records, 9000 bytes in 30 batches (4500 bytes/s), round trip ms mean 0.00 p90 0.00, 2 unacknowledged (oldest 0.4 ms), appended 4.12, backup holds 4.10, last checkpoint at epoch 4"}},
		{"hybrid backup", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, Mode: replication.ModeHybrid, State: replication.StateInSync, CommittedEpoch: 4,
			Log: &replication.LogStatus{Records: 12, Bytes: 800, Acked: "4.10"}}},
			"in-sync", "4", "0ms", []string{"c: hybrid mode log held: 12 records, 800 bytes, up to 4.10"}},
		{"unfenced", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 7, LagMS: 100}},
			"in-sync", "7", "100ms", []string{"c: unfenced (no witness"}},
		{"fenced", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 7, LagMS: 100,
			Fence: &replication.FenceStatus{Witness: "etcd", Lease: "694d8a", TTLMS: 2000, Holder: "a primary", Held: true, HeldUntil: now.Add(time.Second)}}},
			"in-sync", "7", "100ms", []string{`c: fenced by etcd (lease 694d8a, ttl 2000 ms, held as "a primary")`}},
		{"fence lapsed", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateInSync, CommittedEpoch: 7, LagMS: 100,
			Fence: &replication.FenceStatus{Witness: "etcd", Lease: "694d8a", TTLMS: 2000, HeldUntil: now.Add(-time.Second)}}},
			"in-sync", "7", "100ms", []string{"c: fenced by etcd (lease 694d8a, ttl 2000 ms): LAPSED", "output held"}},
		{"superseded through the witness", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RolePrimary, State: replication.StateSuperseded,
			Fence: &replication.FenceStatus{Witness: "etcd", Key: "/rrc/pairs/p/owner", Lost: true}}},
			"superseded", "-", "-", []string{"c: fenced by etcd (/rrc/pairs/p/owner): the other side owns the pair"}},
		{"fenced failover", status.Published{UpdatedAt: now, Engine: replication.Status{Role: replication.RoleBackup, State: replication.StatePrimaryAfterFailover, CommittedEpoch: 60,
			Failover: &replication.FailoverTimings{Epoch: 60, DetectionMS: 97, FenceMS: 1210, RestoreMS: 84.5, TotalMS: 1398}}},
			"primary-after-failover", "60", "-", []string{"detection 97.0 ms, fence 1210.0 ms, stop"}},
		{"stale", status.Published{UpdatedAt: now.Add(-time.Minute), Engine: replication.Status{Role: replication.RoleBackup, State: replication.StateInSync}},
			"in-sync (stale: not updated for 1m0s)", "-", "-", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, committed, lag := describe(tc.st, time.Now())
			if state != tc.state || committed != tc.committed || lag != tc.lag {
				t.Errorf("describe = %q %q %q, want %q %q %q", state, committed, lag, tc.state, tc.committed, tc.lag)
			}
			details := strings.Join(detailLines("c", tc.st), "\n")
			for _, d := range tc.details {
				if !strings.Contains(details, d) {
					t.Errorf("details %q lack %q", details, d)
				}
			}
		})
	}
}
