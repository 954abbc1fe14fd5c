// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package metrics

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
)

func writeStatus(t *testing.T, stateDir string, st status.Published) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	p := status.File(stateDir, st.Namespace, st.ID)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCollector: the metrics of a primary in sync and of a backup after a
// failover, in two namespaces, as a scrape of Handler shows them; a torn
// status file is counted, not fatal.
func TestCollector(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1700000000, 0)
	hist := &replication.Histogram{Cumulative: make([]uint64, len(replication.HistogramBoundsMS)), Count: 4, SumMS: 40}
	for i, b := range replication.HistogramBoundsMS {
		if b >= 10 {
			hist.Cumulative[i] = 4
		} else if b >= 5 {
			hist.Cumulative[i] = 1
		}
	}
	writeStatus(t, dir, status.Published{ID: "redis", Namespace: "default", UpdatedAt: now.Add(-500 * time.Millisecond), Engine: replication.Status{
		Pair: "redis", Role: replication.RolePrimary, Mode: replication.ModeHybrid, State: replication.StateInSync,
		StateSeconds: map[replication.State]float64{replication.StateInSync: 12.5, replication.StateDegraded: 3},
		Epoch:        41, CommittedEpoch: 40, LagMS: 150, Epochs: 41, FailedEpochs: 2, IdleTicks: 7,
		PauseMS: replication.Summary{N: 4, Last: 10, Histogram: hist}, BytesPerEpoch: replication.Summary{Last: 4096},
		Gate:  &replication.GateStatus{Held: 3, HeldBytes: 300, OldestHeldMS: 2, Released: 1000, Dropped: 1},
		Log:   &replication.LogStatus{Records: 500, Bytes: 64000, Unacked: 2, OldestUnackedMS: 0.5},
		Fence: &replication.FenceStatus{Witness: "etcd", Lease: "694d", Held: true, Lapses: 2},
	}})
	writeStatus(t, dir, status.Published{ID: "cache", Namespace: "k8s.io", UpdatedAt: now.Add(-10 * time.Second), Engine: replication.Status{
		Pair: "cache", Role: replication.RoleBackup, Mode: replication.ModeEpoch, State: replication.StatePrimaryAfterFailover,
		CommittedEpoch: 99, Epochs: 99,
		Failover: &replication.FailoverTimings{DetectionMS: 300, FenceMS: 1200, RestoreMS: 250, NetworkMS: 5, TotalMS: 1800, Epoch: 99},
	}})
	if err := os.WriteFile(filepath.Join(dir, "status", "default", "torn.json"), []byte(`{"id":`), 0o644); err != nil {
		t.Fatal(err)
	}

	c := &Collector{StateDir: dir, Now: func() time.Time { return now }}
	want := `
# HELP rrc_checkpoint_pause_seconds Freeze to thaw, per checkpoint.
# TYPE rrc_checkpoint_pause_seconds histogram
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.0001"} 0
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.00025"} 0
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.0005"} 0
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.001"} 0
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.0025"} 0
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.005"} 1
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.01"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.025"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.05"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.1"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.25"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="0.5"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="1"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="2.5"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="5"} 4
rrc_checkpoint_pause_seconds_bucket{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",le="+Inf"} 4
rrc_checkpoint_pause_seconds_sum{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 0.04
rrc_checkpoint_pause_seconds_count{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 4
# HELP rrc_failover_phase_seconds The last failover, per phase (detection, fence, stop, log read, prepare, restore, checkpoint verified alongside them, replay, network; total: last heard to reachable).
# TYPE rrc_failover_phase_seconds gauge
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="detection",role="backup"} 0.3
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="fence",role="backup"} 1.2
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="log",role="backup"} 0
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="network",role="backup"} 0.005
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="prepare",role="backup"} 0
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="replay",role="backup"} 0
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="restore",role="backup"} 0.25
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="stop",role="backup"} 0
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="verify",role="backup"} 0
rrc_failover_phase_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",phase="total",role="backup"} 1.8
# HELP rrc_failovers_total Backup: promotions after the primary failed.
# TYPE rrc_failovers_total counter
rrc_failovers_total{container="cache",mode="epoch",namespace="k8s.io",pair="cache",role="backup"} 1
# HELP rrc_fence_held Fenced: 1 while this side surely owns the pair (its lease renewed, less the drift margin).
# TYPE rrc_fence_held gauge
rrc_fence_held{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 1
# HELP rrc_fence_lapses_total Fenced primary: times its ownership could have expired (output held until renewed).
# TYPE rrc_fence_lapses_total counter
rrc_fence_lapses_total{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 2
# HELP rrc_fenced 1 when a witness (etcd) fences the pair, 0 when it is unfenced.
# TYPE rrc_fenced gauge
rrc_fenced{container="cache",mode="epoch",namespace="k8s.io",pair="cache",role="backup"} 0
rrc_fenced{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 1
# HELP rrc_gate_held_packets Outgoing packets held by the output gate.
# TYPE rrc_gate_held_packets gauge
rrc_gate_held_packets{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 3
# HELP rrc_lag_seconds Age of the state the backup holds.
# TYPE rrc_lag_seconds gauge
rrc_lag_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",role="backup"} 0
rrc_lag_seconds{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 0.15
# HELP rrc_log_unacked_records Hybrid mode: records the backup has not acknowledged.
# TYPE rrc_log_unacked_records gauge
rrc_log_unacked_records{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 2
# HELP rrc_state_seconds_total Time spent in each state since the side started (time degraded, say).
# TYPE rrc_state_seconds_total counter
rrc_state_seconds_total{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",state="degraded"} 3
rrc_state_seconds_total{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary",state="in-sync"} 12.5
# HELP rrc_status_age_seconds Age of the shim's status file: over a few seconds, the shim is gone.
# TYPE rrc_status_age_seconds gauge
rrc_status_age_seconds{container="cache",mode="epoch",namespace="k8s.io",pair="cache",role="backup"} 10
rrc_status_age_seconds{container="redis",mode="hybrid",namespace="default",pair="redis",role="primary"} 0.5
# HELP rrc_status_read_errors Status files that could not be read at this scrape.
# TYPE rrc_status_read_errors gauge
rrc_status_read_errors 1
# HELP rrc_ticks_without_checkpoint_total Ticks that took no checkpoint: busy (a deferred one was already due) or idle (nothing in or out since the last committed one).
# TYPE rrc_ticks_without_checkpoint_total counter
rrc_ticks_without_checkpoint_total{container="redis",mode="hybrid",namespace="default",pair="redis",reason="busy",role="primary"} 0
rrc_ticks_without_checkpoint_total{container="redis",mode="hybrid",namespace="default",pair="redis",reason="idle",role="primary"} 7
`
	names := []string{"rrc_checkpoint_pause_seconds", "rrc_failover_phase_seconds", "rrc_failovers_total", "rrc_fence_held", "rrc_fence_lapses_total", "rrc_fenced", "rrc_gate_held_packets",
		"rrc_lag_seconds", "rrc_log_unacked_records", "rrc_state_seconds_total", "rrc_status_age_seconds", "rrc_status_read_errors",
		"rrc_ticks_without_checkpoint_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Exactly one state is current per container: the one in the file.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	current := map[string][]string{}
	for _, f := range families {
		if f.GetName() != "rrc_state" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if m.GetGauge().GetValue() == 1 {
				current[l["container"]] = append(current[l["container"]], l["state"])
			}
		}
	}
	if fmt.Sprint(current) != "map[cache:[primary-after-failover] redis:[in-sync]]" {
		t.Errorf("current states %v", current)
	}

	rec := httptest.NewRecorder()
	Handler(dir).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 || !strings.Contains(string(body), `rrc_failovers_total{container="cache"`) {
		t.Errorf("GET /metrics: %d\n%s", rec.Code, body)
	}
}
