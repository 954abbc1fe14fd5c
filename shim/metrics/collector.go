// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package metrics turns the status files the shims of one host publish into
// Prometheus metrics: one collector for the host, read at each scrape, so
// that a scraper has one address per host however many containers come and
// go (docs/OPERATIONS.md).
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/status"
)

// Collector collects the replication metrics of every container whose
// shim publishes a status file under StateDir (the shim configuration's
// state_dir).
type Collector struct {
	StateDir string
	Now      func() time.Time // nil: time.Now
}

var containerLabels = []string{"namespace", "container", "pair", "role", "mode"}

func desc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc("rrc_"+name, help, append(append([]string{}, containerLabels...), extra...), nil)
}

var (
	descState        = desc("state", "1 for the side's current replication state, 0 for its other states.", "state")
	descStateSeconds = desc("state_seconds_total", "Time spent in each state since the side started (time degraded, say).", "state")
	descStatusAge    = desc("status_age_seconds", "Age of the shim's status file: over a few seconds, the shim is gone.")
	descEpoch        = desc("epoch", "Primary: newest epoch checkpointed; backup: newest committed.")
	descCommitted    = desc("committed_epoch", "Newest epoch the backup has committed.")
	descLag          = desc("lag_seconds", "Age of the state the backup holds.")
	descCheckpoints  = desc("checkpoints_total", "Primary: checkpoints taken; backup: checkpoints committed.")
	descFailed       = desc("checkpoint_failures_total", "Checkpoints that failed (output stays held).")
	descNacks        = desc("checkpoint_refusals_total", "Checkpoints the backup refused.")
	descDeferred     = desc("checkpoints_deferred_total", "Checkpoints taken late: the previous one was still being sent at the tick.")
	descSkipped      = desc("ticks_without_checkpoint_total", "Ticks that took no checkpoint: busy (a deferred one was already due) or idle (nothing in or out since the last committed one).", "reason")
	descStreak       = desc("checkpoint_failures_in_a_row", "Checkpoints failed or refused since the last acknowledged one: the alarm.")
	descRepairs      = desc("repairs_total", "Primary: times re-paired with a backup after running degraded.")
	descRedials      = desc("redials_total", "Primary: lost peer connections dialled again at once, output held.")
	descPause        = desc("checkpoint_pause_seconds", "Freeze to thaw, per checkpoint.")
	descAck          = desc("checkpoint_ack_seconds", "Checkpoint taken to acknowledged by the backup.")
	descInputHold    = desc("input_hold_seconds", "Inbound packets held per checkpoint.")
	descBytes        = desc("checkpoint_bytes", "Size of the last checkpoint.")
	descSent         = desc("checkpoint_sent_bytes", "Of the last checkpoint, what was sent to the backup (the rest was copied from the previous one).")
	descHeld         = desc("gate_held_packets", "Outgoing packets held by the output gate.")
	descHeldBytes    = desc("gate_held_bytes", "Bytes of the outgoing packets held.")
	descOldestHeld   = desc("gate_oldest_held_seconds", "Age of the oldest outgoing packet held.")
	descReleased     = desc("gate_released_packets_total", "Outgoing packets released.")
	descDropped      = desc("gate_dropped_packets_total", "Outgoing packets dropped (a full queue; TCP retransmits them).")
	descLogRecords   = desc("log_records_total", "Hybrid mode: records appended to the input log (primary) or held (backup).")
	descLogBytes     = desc("log_bytes_total", "Hybrid mode: bytes of the input log.")
	descLogUnacked   = desc("log_unacked_records", "Hybrid mode: records the backup has not acknowledged.")
	descLogOldest    = desc("log_oldest_unacked_seconds", "Hybrid mode: age of the oldest unacknowledged record.")
	descLogRoundTrip = desc("log_round_trip_seconds", "Hybrid mode: a record appended to the backup's acknowledgement of it.")
	descFailovers    = desc("failovers_total", "Backup: promotions after the primary failed.")
	descFailoverStep = desc("failover_phase_seconds", "The last failover, per phase (detection, fence, stop, log read, prepare, restore, checkpoint verified alongside them, replay, network; total: last heard to reachable).", "phase")
	descFenced       = desc("fenced", "1 when a witness (etcd) fences the pair, 0 when it is unfenced.")
	descFenceHeld    = desc("fence_held", "Fenced: 1 while this side surely owns the pair (its lease renewed, less the drift margin).")
	descFenceLapses  = desc("fence_lapses_total", "Fenced primary: times its ownership could have expired (output held until renewed).")
	descScrapeErrors = prometheus.NewDesc("rrc_status_read_errors", "Status files that could not be read at this scrape.", nil, nil)
)

// Handler serves the metrics of every replicated container of the host
// whose shims write under stateDir.
func Handler(stateDir string) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&Collector{StateDir: stateDir})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// allDescs is every metric the collector may send.
var allDescs = []*prometheus.Desc{
	descState, descStateSeconds, descStatusAge, descEpoch, descCommitted, descLag, descCheckpoints,
	descFailed, descNacks, descDeferred, descSkipped, descStreak, descRepairs, descRedials, descPause,
	descAck, descInputHold, descBytes, descSent, descHeld, descHeldBytes, descOldestHeld,
	descReleased, descDropped, descLogRecords, descLogBytes, descLogUnacked, descLogOldest,
	descLogRoundTrip, descFailovers, descFailoverStep, descFenced, descFenceHeld, descFenceLapses, descScrapeErrors,
}

// Describe sends the descriptions of every metric.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads the status files and sends their metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	list, errs := status.List(c.StateDir)
	ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, float64(len(errs)))
	for _, st := range list {
		collectOne(ch, st, now())
	}
}

func collectOne(ch chan<- prometheus.Metric, st status.Published, now time.Time) {
	e := st.Engine
	labels := []string{st.Namespace, st.ID, e.Pair, string(e.Role), string(e.Mode)}
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(labels, extra...)...)
	}
	counter := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(labels, extra...)...)
	}
	histogram := func(d *prometheus.Desc, s replication.Summary) {
		if h := s.Histogram; h != nil && len(h.Cumulative) == len(replication.HistogramBoundsMS) {
			buckets := make(map[float64]uint64, len(h.Cumulative))
			for i, b := range replication.HistogramBoundsMS {
				buckets[b/1000] = h.Cumulative[i]
			}
			ch <- prometheus.MustNewConstHistogram(d, h.Count, h.SumMS/1000, buckets, labels...)
		}
	}

	for _, s := range replication.States(e.Role) {
		v := 0.0
		if s == e.State {
			v = 1
		}
		gauge(descState, v, string(s))
	}
	for s, sec := range e.StateSeconds {
		counter(descStateSeconds, sec, string(s))
	}
	gauge(descStatusAge, now.Sub(st.UpdatedAt).Seconds())
	gauge(descEpoch, float64(e.Epoch))
	gauge(descCommitted, float64(e.CommittedEpoch))
	gauge(descLag, e.LagMS/1000)
	counter(descCheckpoints, float64(e.Epochs))
	if e.Role == replication.RolePrimary {
		counter(descFailed, float64(e.FailedEpochs))
		counter(descNacks, float64(e.Nacks))
		counter(descDeferred, float64(e.DeferredEpochs))
		counter(descSkipped, float64(e.SkippedEpochs), "busy")
		counter(descSkipped, float64(e.IdleTicks), "idle")
		gauge(descStreak, float64(e.ConsecutiveFailures))
		counter(descRepairs, float64(e.Repairs))
		counter(descRedials, float64(e.Redials))
		histogram(descPause, e.PauseMS)
		histogram(descAck, e.AckMS)
		histogram(descInputHold, e.InputHoldMS)
		gauge(descSent, e.SentPerEpoch.Last)
	}
	gauge(descBytes, e.BytesPerEpoch.Last)
	if g := e.Gate; g != nil {
		gauge(descHeld, float64(g.Held))
		gauge(descHeldBytes, float64(g.HeldBytes))
		gauge(descOldestHeld, g.OldestHeldMS/1000)
		counter(descReleased, float64(g.Released))
		counter(descDropped, float64(g.Dropped))
	}
	if l := e.Log; l != nil {
		counter(descLogRecords, float64(l.Records))
		counter(descLogBytes, float64(l.Bytes))
		if e.Role == replication.RolePrimary {
			gauge(descLogUnacked, float64(l.Unacked))
			gauge(descLogOldest, l.OldestUnackedMS/1000)
			histogram(descLogRoundTrip, l.RoundTripMS)
		}
	}
	fenced := 0.0
	if fs := e.Fence; fs != nil {
		fenced = 1
		held := 0.0
		if fs.Held {
			held = 1
		}
		gauge(descFenceHeld, held)
		if e.Role == replication.RolePrimary {
			counter(descFenceLapses, float64(fs.Lapses))
		}
	}
	gauge(descFenced, fenced)
	if e.Role == replication.RoleBackup {
		n := 0.0
		if e.Failover != nil {
			n = 1 // a backup promotes once; its pair's next backup is a new container
		}
		counter(descFailovers, n)
	}
	if f := e.Failover; f != nil {
		for phase, msec := range map[string]float64{"detection": f.DetectionMS, "fence": f.FenceMS, "stop": f.StopMS, "verify": f.VerifyMS, "log": f.LogMS,
			"prepare": f.PrepareMS, "restore": f.RestoreMS, "replay": f.ReplayMS, "network": f.NetworkMS, "total": f.TotalMS} {
			gauge(descFailoverStep, msec/1000, phase)
		}
	}
}
