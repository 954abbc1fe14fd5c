// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package settings

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
)

func TestParseAnnotations(t *testing.T) {
	primary := map[string]string{"io.rrc.role": "primary", "io.rrc.peer": "10.77.0.2:7100"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		in      map[string]string
		wantErr []string // substrings, all must appear
		check   func(t *testing.T, c *replication.Config)
	}{
		{name: "none", in: map[string]string{"io.kubernetes.cri.sandbox-id": "x"}, check: func(t *testing.T, c *replication.Config) {
			if c != nil {
				t.Fatalf("want nil config, got %+v", c)
			}
		}},
		{name: "primary defaults", in: primary, check: func(t *testing.T, c *replication.Config) {
			if c.Role != replication.RolePrimary || c.Mode != replication.ModeEpoch || c.Epoch != replication.DefaultEpoch ||
				c.Heartbeat != 30*time.Millisecond || c.HeartbeatMisses != 3 || c.AckTimeout != 5*time.Second || c.Pair != "ctr1" || c.Service != nil ||
				c.FailingAfterFailures != replication.DefaultFailingAfterFailures || c.FailingAfter != replication.DefaultFailingAfter {
				t.Fatalf("unexpected defaults: %+v", c)
			}
		}},
		{name: "hybrid's own default interval", in: with(primary, "io.rrc.mode", "hybrid"), check: func(t *testing.T, c *replication.Config) {
			if c.Mode != replication.ModeHybrid || c.Epoch != replication.DefaultHybridEpoch {
				t.Fatalf("hybrid without io.rrc.epoch: %+v", c)
			}
		}},
		{name: "backup full", in: map[string]string{
			"io.rrc.role": "backup", "io.rrc.listen": "0.0.0.0:7100", "io.rrc.peer-name": "host-a", "io.rrc.mode": "hybrid", "io.rrc.epoch": "250ms",
			"io.rrc.heartbeat": "10ms", "io.rrc.heartbeat-misses": "5", "io.rrc.pair": "redis-1",
			"io.rrc.service-ip": "10.77.0.200/24", "io.rrc.service-mac": "02:00:0a:4d:00:c8", "io.rrc.service-link": "eth0",
		}, check: func(t *testing.T, c *replication.Config) {
			if c.Mode != replication.ModeHybrid || c.Epoch != 250*time.Millisecond || c.HeartbeatMisses != 5 || c.Pair != "redis-1" {
				t.Fatalf("unexpected: %+v", c)
			}
			if c.Service.Address.String() != "10.77.0.200/24" || c.Service.Address.IP.String() != "10.77.0.200" ||
				c.Service.MAC.String() != "02:00:0a:4d:00:c8" || c.Service.Link != "eth0" {
				t.Fatalf("unexpected service: %+v", c.Service)
			}
		}},
		{name: "hostname peer", in: with(primary, "io.rrc.peer", "host-b.lan:7100")},
		{name: "unknown key", in: with(primary, "io.rrc.epoc", "5ms"), wantErr: []string{"io.rrc.epoc", "unknown annotation", "io.rrc.epoch"}},
		{name: "no role", in: map[string]string{"io.rrc.epoch": "5ms"}, wantErr: []string{"annotation io.rrc.role", "not one of primary, backup"}},
		{name: "bad role", in: map[string]string{"io.rrc.role": "leader"}, wantErr: []string{`io.rrc.role="leader"`}},
		{name: "primary without peer", in: map[string]string{"io.rrc.role": "primary"}, wantErr: []string{"io.rrc.peer", "required for the primary"}},
		{name: "backup without listen", in: map[string]string{"io.rrc.role": "backup", "io.rrc.peer-name": "a"}, wantErr: []string{"io.rrc.listen", "required for the backup"}},
		{name: "backup without peer name", in: map[string]string{"io.rrc.role": "backup", "io.rrc.listen": ":7100"}, wantErr: []string{"io.rrc.peer-name", "certificate"}},
		{name: "bad peer name", in: with(primary, "io.rrc.peer-name", "a b"), wantErr: []string{"io.rrc.peer-name", "host name"}},
		{name: "peer without port", in: with(primary, "io.rrc.peer", "10.0.0.1"), wantErr: []string{"io.rrc.peer", "not host:port"}},
		{name: "peer bad port", in: with(primary, "io.rrc.peer", "10.0.0.1:99999"), wantErr: []string{"io.rrc.peer", "1-65535"}},
		{name: "peer bad host", in: with(primary, "io.rrc.peer", "a_b:80"), wantErr: []string{"io.rrc.peer", "neither an IP"}},
		{name: "bad mode", in: with(primary, "io.rrc.mode", "lazy"), wantErr: []string{"io.rrc.mode", "epoch, hybrid"}},
		{name: "epoch no unit", in: with(primary, "io.rrc.epoch", "100"), wantErr: []string{"io.rrc.epoch", "needs a unit"}},
		{name: "epoch garbage", in: with(primary, "io.rrc.epoch", "banana"), wantErr: []string{`io.rrc.epoch="banana"`, "not a duration"}},
		{name: "epoch negative", in: with(primary, "io.rrc.epoch", "-5ms"), wantErr: []string{"io.rrc.epoch", "positive"}},
		{name: "epoch too short", in: with(primary, "io.rrc.epoch", "1ms"), wantErr: []string{"io.rrc.epoch", "outside"}},
		{name: "heartbeat too long", in: with(primary, "io.rrc.heartbeat", "1m"), wantErr: []string{"io.rrc.heartbeat", "outside"}},
		{name: "ack timeout set", in: with(primary, "io.rrc.ack-timeout", "12s"), check: func(t *testing.T, c *replication.Config) {
			if c.AckTimeout != 12*time.Second {
				t.Fatalf("ack timeout %s", c.AckTimeout)
			}
		}},
		{name: "ack timeout too short", in: with(primary, "io.rrc.ack-timeout", "10ms"), wantErr: []string{"io.rrc.ack-timeout", "outside"}},
		{name: "misses zero", in: with(primary, "io.rrc.heartbeat-misses", "0"), wantErr: []string{"io.rrc.heartbeat-misses", "at least 1"}},
		{name: "misses word", in: with(primary, "io.rrc.heartbeat-misses", "three"), wantErr: []string{"io.rrc.heartbeat-misses", "whole number"}},
		{name: "failing bounds set", in: with(primary, "io.rrc.failing-after-failures", "50", "io.rrc.failing-after", "1m"), check: func(t *testing.T, c *replication.Config) {
			if c.FailingAfterFailures != 50 || c.FailingAfter != time.Minute {
				t.Fatalf("failing bounds: %d, %s; want 50, 1m", c.FailingAfterFailures, c.FailingAfter)
			}
		}},
		{name: "every tick a checkpoint", in: with(primary, "io.rrc.skip-idle", "false"), check: func(t *testing.T, c *replication.Config) {
			if c.SkipIdle {
				t.Fatal("io.rrc.skip-idle=false not applied")
			}
		}},
		{name: "skip idle default", in: primary, check: func(t *testing.T, c *replication.Config) {
			if !c.SkipIdle {
				t.Fatal("SkipIdle off by default")
			}
		}},
		{name: "skip idle not a boolean", in: with(primary, "io.rrc.skip-idle", "yes"), wantErr: []string{"io.rrc.skip-idle", `neither "true" nor "false"`}},
		{name: "failing after zero failures", in: with(primary, "io.rrc.failing-after-failures", "0"), wantErr: []string{"io.rrc.failing-after-failures", "at least 1"}},
		{name: "failing after too many failures", in: with(primary, "io.rrc.failing-after-failures", "2000000"), wantErr: []string{"io.rrc.failing-after-failures", "outside"}},
		{name: "failing after a bare number", in: with(primary, "io.rrc.failing-after", "5"), wantErr: []string{"io.rrc.failing-after", "unit"}},
		{name: "failing after too long", in: with(primary, "io.rrc.failing-after", "2h"), wantErr: []string{"io.rrc.failing-after", "outside"}},
		{name: "service ip no prefix", in: with(primary, "io.rrc.service-ip", "10.77.0.200", "io.rrc.service-link", "eth0"), wantErr: []string{"io.rrc.service-ip", "prefix length"}},
		{name: "service ip without link", in: with(primary, "io.rrc.service-ip", "10.77.0.200/24"), wantErr: []string{"io.rrc.service-link", "required"}},
		{name: "service link without ip", in: with(primary, "io.rrc.service-link", "eth0"), wantErr: []string{"io.rrc.service-ip", "required"}},
		{name: "multicast mac", in: with(primary, "io.rrc.service-mac", "01:00:5e:00:00:01"), wantErr: []string{"io.rrc.service-mac", "multicast"}},
		{name: "bad mac", in: with(primary, "io.rrc.service-mac", "zz"), wantErr: []string{"io.rrc.service-mac", "MAC"}},
		{name: "bad link", in: with(primary, "io.rrc.service-link", "a/b"), wantErr: []string{"io.rrc.service-link", "interface name"}},
		{name: "bad pair", in: with(primary, "io.rrc.pair", "a/b"), wantErr: []string{"io.rrc.pair"}},
		{name: "several errors on one line", in: with(primary, "io.rrc.epoch", "x", "io.rrc.mode", "y"), wantErr: []string{"io.rrc.epoch", "; ", "io.rrc.mode"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseAnnotations("ctr1", tc.in)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("want error containing %q, got config %+v", tc.wantErr, c)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans several lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func FuzzParseAnnotations(f *testing.F) {
	f.Add("role", "primary", "peer", "10.0.0.1:1", "epoch", "5ms")
	f.Add("role", "backup", "listen", "[::1]:7100", "service-ip", "10.0.0.1/8")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		in := map[string]string{"io.rrc." + k1: v1, "io.rrc." + k2: v2, "io.rrc." + k3: v3}
		c, err := ParseAnnotations("id", in)
		if err == nil {
			if c == nil {
				t.Fatal("nil config without error for io.rrc.* annotations")
			}
			if verr := c.Validate(); verr != nil {
				t.Fatalf("accepted a config that does not validate: %v", verr)
			}
		}
	})
}

// TestParseAnnotationsPairName: the pair name, set or defaulted from the
// container ID, must be a DNS label; the error names io.rrc.pair.
func TestParseAnnotationsPairName(t *testing.T) {
	primary := map[string]string{"io.rrc.role": "primary", "io.rrc.peer": "10.0.0.2:7100"}
	for _, tc := range []struct {
		name, id, pair string // pair "": not set
		want           string // the pair, or "" for an error
	}{
		{name: "set", id: "ctr1", pair: "redis-1", want: "redis-1"},
		{name: "from the ID", id: "web-7", want: "web-7"},
		{name: "dot", id: "ctr1", pair: "."},
		{name: "dot-dot", id: "ctr1", pair: ".."},
		{name: "upper case", id: "ctr1", pair: "Redis"},
		{name: "leading dash", id: "ctr1", pair: "-a"},
		{name: "too long", id: "ctr1", pair: strings.Repeat("a", 64)},
		{name: "ID not a label", id: "My_Container"},
		{name: "ID not a label, pair set", id: "My_Container", pair: "mine", want: "mine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := maps.Clone(primary)
			if tc.pair != "" {
				in["io.rrc.pair"] = tc.pair
			}
			c, err := ParseAnnotations(tc.id, in)
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "io.rrc.pair") || !strings.Contains(err.Error(), "DNS label") && !strings.Contains(err.Error(), "1 to 63") && !strings.Contains(err.Error(), "start or end") {
					t.Fatalf("ParseAnnotations = %+v, %v; want an error naming io.rrc.pair", c, err)
				}
				if strings.Count(err.Error(), "io.rrc.pair") != 1 {
					t.Errorf("io.rrc.pair reported more than once: %v", err)
				}
				return
			}
			if err != nil || c.Pair != tc.want {
				t.Fatalf("ParseAnnotations = %+v, %v; want pair %q", c, err, tc.want)
			}
		})
	}
}

func TestIsCRISandbox(t *testing.T) {
	for _, tc := range []struct {
		ann  map[string]string
		want bool
	}{
		{map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.rrc.role": "primary"}, true},
		{map[string]string{"io.kubernetes.cri.container-type": "container", "io.rrc.role": "primary"}, false},
		{map[string]string{"io.rrc.role": "primary"}, false},
		{nil, false},
	} {
		if got := IsCRISandbox(tc.ann); got != tc.want {
			t.Errorf("IsCRISandbox(%v) = %v, want %v", tc.ann, got, tc.want)
		}
	}
}
