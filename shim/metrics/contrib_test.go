// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestGrafanaDashboard: the dashboard users import (contrib/grafana) is
// valid, and every metric its queries name is one the collector serves.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../contrib/grafana/rrc-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	served := map[string]bool{}
	ch := make(chan *prometheus.Desc, 100)
	go func() { (&Collector{StateDir: t.TempDir()}).Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			served[m[1]] = true
		}
	}
	if len(served) < 20 {
		t.Fatalf("the collector describes %d metrics: %v", len(served), served)
	}
	name := regexp.MustCompile(`rrc_[a-z_]+`)
	if dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard without title or panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, m := range name.FindAllString(q.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !served[base] {
					t.Errorf("panel %q queries %s, which the collector does not serve", p.Title, m)
				}
			}
		}
	}
}
