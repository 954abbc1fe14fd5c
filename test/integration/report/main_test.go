// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func ev(action, test string) string {
	if test == "" {
		return `{"Time":"2026-01-01T00:00:02Z","Action":"` + action + `","Package":"p"}`
	}
	return `{"Time":"2026-01-01T00:00:01Z","Action":"` + action + `","Package":"p","Test":"` + test + `"}`
}

func mustRun(t *testing.T, lines ...string) *Run {
	t.Helper()
	r, err := ParseRun("rt", strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseRun(t *testing.T) {
	r := mustRun(t,
		"garbage line that is not json",
		ev("run", "TestA"), ev("pass", "TestA"),
		ev("run", "TestB"), ev("run", "TestB/x"), ev("fail", "TestB/x"), ev("run", "TestB/y"), ev("skip", "TestB/y"), ev("fail", "TestB"),
		ev("run", "TestC"), ev("skip", "TestC"),
		ev("run", "TestD"), // never finishes
		ev("fail", ""),
	)
	want := map[string]string{"TestA": Pass, "TestB": Fail, "TestB/x": Fail, "TestB/y": Skip, "TestC": Skip, "TestD": Incomplete}
	if !reflect.DeepEqual(r.Status, want) {
		t.Errorf("status %v, want %v", r.Status, want)
	}
	if c := r.counts(false); c != (Counts{Pass: 1, Fail: 2, Skip: 1}) {
		t.Errorf("top-level counts %+v", c)
	}
	if c := r.counts(true); c != (Counts{Fail: 1, Skip: 1}) {
		t.Errorf("subtest counts %+v", c)
	}
	if !r.PkgFail || r.Elapsed != 1 {
		t.Errorf("PkgFail %v Elapsed %v", r.PkgFail, r.Elapsed)
	}
	if got := r.Failed(); !reflect.DeepEqual(got, []string{"TestB", "TestB/x", "TestD"}) {
		t.Errorf("Failed() = %v", got)
	}
}

func TestParseExpectations(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Expectations
		wantErr bool
	}{
		{"comments and blanks", "# c\n\n  # d\n", Expectations{}, false},
		{"spaces", "TestA   needs a thing\n", Expectations{"TestA": "needs a thing"}, false},
		{"tab", "TestA/sub\tneeds\tthing\n", Expectations{"TestA/sub": "needs\tthing"}, false},
		{"no reason", "TestA\n", nil, true},
		{"not a test", "Foo bar\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseExpectations(strings.NewReader(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUnexpected(t *testing.T) {
	r := mustRun(t,
		ev("run", "TestP"), ev("run", "TestP/a"), ev("fail", "TestP/a"), ev("run", "TestP/b"), ev("fail", "TestP/b"), ev("fail", "TestP"),
		ev("run", "TestQ"), ev("run", "TestQ/a"), ev("fail", "TestQ/a"), ev("fail", "TestQ"),
		ev("run", "TestR"), ev("fail", "TestR"),
		ev("run", "TestS"), ev("run", "TestS/a"), ev("pass", "TestS/a"), ev("fail", "TestS"),
	)
	tests := []struct {
		name string
		exp  Expectations
		want []string
	}{
		{"nothing listed", Expectations{}, []string{"TestP", "TestP/a", "TestP/b", "TestQ", "TestQ/a", "TestR", "TestS"}},
		{"parent explained by all its failed subtests", Expectations{"TestP/a": "x", "TestP/b": "y"}, []string{"TestQ", "TestQ/a", "TestR", "TestS"}},
		{"parent not explained by some subtests", Expectations{"TestP/a": "x"}, []string{"TestP", "TestP/b", "TestQ", "TestQ/a", "TestR", "TestS"}},
		{"parent listed", Expectations{"TestQ": "x", "TestR": "y", "TestS": "z"}, []string{"TestP", "TestP/a", "TestP/b", "TestQ/a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Unexpected(r, tc.exp); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRegressions(t *testing.T) {
	base := mustRun(t, ev("pass", "TestA"), ev("pass", "TestB"), ev("fail", "TestC"), ev("skip", "TestD"), ev("pass", "TestE"))
	r := mustRun(t, ev("pass", "TestA"), ev("fail", "TestB"), ev("fail", "TestC"), ev("fail", "TestD"))
	want := []string{"TestB (fail)", "TestE (not run)"}
	if got := Regressions(base, r); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestNoSkips(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "rt.json")
	lines := []string{ev("run", "TestA"), ev("pass", "TestA"), ev("run", "TestB"), ev("run", "TestB/x"), ev("skip", "TestB/x"), ev("pass", "TestB"), ev("pass", "")}
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, lines...).Skipped(); !reflect.DeepEqual(got, []string{"TestB/x"}) {
		t.Errorf("Skipped() = %v", got)
	}
	md := filepath.Join(dir, "summary.md")
	if err := mainErr("", "", md, "", false, []string{f}); err != nil {
		t.Errorf("without -no-skips: %v", err)
	}
	if err := mainErr("", "", md, "", true, []string{f}); !errors.Is(err, errChecks) {
		t.Errorf("with -no-skips: %v, want %v", err, errChecks)
	}
	if b, _ := os.ReadFile(md); !strings.Contains(string(b), "TestB/x skipped") {
		t.Errorf("summary does not name the skipped subtest:\n%s", b)
	}
}
