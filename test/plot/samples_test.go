// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
)

func TestReadColumns(t *testing.T) {
	tests := []struct {
		in      string
		n       int
		want    string
		wantErr string
	}{
		{"unix_ms,latency_ms\n1000,1.5\n1001,2\n", 2, "[[1000 1001] [1.5 2]]", ""},
		{"1000,1.5\n\n1001,2\n", 2, "[[1000 1001] [1.5 2]]", ""},
		{"", 1, "[[]]", ""},
		{"a\n1\nb\n", 1, "", "line 3"},
		{"1,2,3\n", 2, "", "3 columns, want 2"},
		{"h\nNaN\n", 1, "", "not a finite number"},
	}
	for _, tc := range tests {
		got, err := readColumns(strings.NewReader(tc.in), tc.n)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

// FuzzReadColumns: any bytes give columns of equal length or an error.
func FuzzReadColumns(f *testing.F) {
	f.Add("unix_ms,latency_ms\n1,2\n")
	f.Add("1\n2\n")
	f.Fuzz(func(t *testing.T, in string) {
		cols, err := readColumns(strings.NewReader(in), 2)
		if err != nil {
			return
		}
		if len(cols) != 2 || len(cols[0]) != len(cols[1]) {
			t.Fatalf("columns of unequal length: %v", cols)
		}
	})
}

// TestPictures: each picture renders to a PNG from its CSV, and a bad mark
// or an empty file is an error.
func TestPictures(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	samples := write("s.csv", "unix_ms,latency_ms\n1000,1.2\n1050,1.1\n1100,800\n1150,2\n")
	lat := write("l.csv", "1,0.2\n2,0.3\n3,0.25\n4,5\n")
	ep := write("e.csv", "epoch,pause_ms,ack_ms\n1,3,5\n2,4,6\n")
	empty := write("empty.csv", "unix_ms,latency_ms\n")
	for name, mk := range map[string]func() (*plot.Plot, error){
		"timeline": func() (*plot.Plot, error) { return timeline(samples, marks{"crash=1080", "failover done=1120"}) },
		"cdf":      func() (*plot.Plot, error) { return cdf([]string{"runc=" + lat, "hybrid=" + lat}) },
		"epochs":   func() (*plot.Plot, error) { return epochs(ep) },
	} {
		p, err := mk()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := filepath.Join(dir, name+".png")
		if err := p.Save(4*vg.Inch, 3*vg.Inch, out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s: not a PNG (%v)", name, err)
		}
	}
	if _, err := timeline(samples, marks{"crash"}); err == nil {
		t.Error("a mark without a time: no error")
	}
	if _, err := timeline(empty, nil); err == nil || !strings.Contains(err.Error(), "no samples") {
		t.Errorf("empty samples: %v", err)
	}
}
