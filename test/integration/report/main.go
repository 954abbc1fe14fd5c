// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command report reads `go test -json` outputs of containerd's client
// integration tests (one file per runtime, named RUNTIME.json) and checks
// them:
//
//   - every failing test must be listed in the expectations file (tests known
//     to fail on this machine for every runtime), or be a parent test all of
//     whose failing subtests are listed;
//   - with -baseline, every test that passed in the baseline run must pass in
//     the other runs.
//
// It prints a summary, writes a Markdown summary (-md) and a readable log per
// run (-log-dir), and exits 1 when a check fails.
//
//	report [-expect known-failures.txt] [-baseline runc.json] [-md out.md] [-log-dir DIR] RUN.json...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (test2json) output.
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// Status of a test at the end of a run.
const (
	Pass       = "pass"
	Fail       = "fail"
	Skip       = "skip"
	Incomplete = "incomplete" // started, never finished (panic, timeout, crash)
)

// Run is the result of one test binary run.
type Run struct {
	Name     string            // runtime, from the file name
	Status   map[string]string // test (and subtest) name -> status
	Order    []string          // test names in start order
	Elapsed  float64           // seconds, from the package's final event
	PkgFail  bool              // the package as a whole failed
	Output   []string          // all output, in order
	testLogs map[string]*strings.Builder
}

// ParseRun reads test2json events.
func ParseRun(name string, r io.Reader) (*Run, error) {
	run := &Run{Name: name, Status: map[string]string{}, testLogs: map[string]*strings.Builder{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var first, last time.Time
	sawPkgEnd := false
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if !e.Time.IsZero() {
			if first.IsZero() {
				first = e.Time
			}
			last = e.Time
		}
		if e.Output != "" {
			run.Output = append(run.Output, e.Output)
			if e.Test != "" {
				b := run.testLogs[e.Test]
				if b == nil {
					b = &strings.Builder{}
					run.testLogs[e.Test] = b
				}
				b.WriteString(e.Output)
			}
		}
		if e.Test == "" {
			switch e.Action {
			case Pass, Fail, Skip:
				sawPkgEnd = true
				run.PkgFail = e.Action == Fail
			}
			continue
		}
		switch e.Action {
		case "run":
			if _, ok := run.Status[e.Test]; !ok {
				run.Order = append(run.Order, e.Test)
			}
			run.Status[e.Test] = Incomplete
		case Pass, Fail, Skip:
			if _, ok := run.Status[e.Test]; !ok {
				run.Order = append(run.Order, e.Test)
			}
			run.Status[e.Test] = e.Action
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !sawPkgEnd {
		run.PkgFail = true
	}
	// The test binary run directly prints no elapsed time for the
	// package: use the span of the event times (test2json -t).
	if !first.IsZero() {
		run.Elapsed = last.Sub(first).Seconds()
	}
	return run, nil
}

// Counts of top-level tests and of subtests by status.
type Counts struct {
	Pass, Fail, Skip int
}

func (r *Run) counts(sub bool) Counts {
	var c Counts
	for t, s := range r.Status {
		if strings.Contains(t, "/") != sub {
			continue
		}
		switch s {
		case Pass:
			c.Pass++
		case Skip:
			c.Skip++
		default:
			c.Fail++
		}
	}
	return c
}

// Skipped lists the tests (and subtests) that skipped, sorted.
func (r *Run) Skipped() []string {
	var out []string
	for t, s := range r.Status {
		if s == Skip {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Failed lists the tests that failed or did not complete, sorted.
func (r *Run) Failed() []string {
	var out []string
	for t, s := range r.Status {
		if s == Fail || s == Incomplete {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// FailureLogs returns the output of every failed test, without the
// client's debug log lines.
func (r *Run) FailureLogs() string {
	var b strings.Builder
	for _, t := range r.Failed() {
		fmt.Fprintf(&b, "=== %s (%s)\n", t, r.Status[t])
		if l := r.testLogs[t]; l != nil {
			for _, line := range strings.SplitAfter(l.String(), "\n") {
				if strings.Contains(line, "log_hook.go") && strings.Contains(line, "level=debug") {
					continue
				}
				b.WriteString(line)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Expectations maps a test name to the reason it is known to fail.
type Expectations map[string]string

// ParseExpectations reads "TestName[/sub]  reason" lines; '#' starts a
// comment line.
func ParseExpectations(r io.Reader) (Expectations, error) {
	exp := Expectations{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, reason, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '\t'); i >= 0 {
			name, reason = name[:i], name[i+1:]+" "+reason
		}
		reason = strings.TrimSpace(reason)
		if !strings.HasPrefix(name, "Test") {
			return nil, fmt.Errorf("line %d: %q does not start with a test name", n, line)
		}
		if reason == "" {
			return nil, fmt.Errorf("line %d: %s has no reason", n, name)
		}
		exp[name] = reason
	}
	return exp, sc.Err()
}

// Unexpected returns the failures of r not explained by exp: a failed test is
// explained when it is listed, or when it has failed subtests and every
// failed direct subtest is explained.
func Unexpected(r *Run, exp Expectations) []string {
	failed := map[string]bool{}
	for _, t := range r.Failed() {
		failed[t] = true
	}
	children := map[string][]string{}
	for t := range failed {
		if i := strings.LastIndexByte(t, '/'); i > 0 {
			children[t[:i]] = append(children[t[:i]], t)
		}
	}
	memo := map[string]bool{}
	var explained func(t string) bool
	explained = func(t string) bool {
		if v, ok := memo[t]; ok {
			return v
		}
		v := false
		if _, ok := exp[t]; ok {
			v = true
		} else if cs := children[t]; len(cs) > 0 {
			v = true
			for _, c := range cs {
				if !explained(c) {
					v = false
				}
			}
		}
		memo[t] = v
		return v
	}
	var out []string
	for _, t := range r.Failed() {
		if !explained(t) {
			out = append(out, t)
		}
	}
	return out
}

// Regressions lists tests that passed in base but did not pass in r (a test
// that r did not run at all counts as missing).
func Regressions(base, r *Run) []string {
	var out []string
	for t, s := range base.Status {
		if s != Pass {
			continue
		}
		if got := r.Status[t]; got != Pass {
			if got == "" {
				got = "not run"
			}
			out = append(out, t+" ("+got+")")
		}
	}
	sort.Strings(out)
	return out
}

func runName(p string) string {
	return strings.TrimSuffix(filepath.Base(p), ".json")
}

// load reads RUN.json and, when present beside it, RUN.seconds (the wall
// time of the run, written by run.sh: test2json run after the fact stamps
// events with its own time).
func load(p string) (*Run, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := ParseRun(runName(p), f)
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(strings.TrimSuffix(p, ".json") + ".seconds"); err == nil {
		if _, err := fmt.Sscan(string(b), &r.Elapsed); err != nil {
			return nil, fmt.Errorf("%s.seconds: %w", strings.TrimSuffix(p, ".json"), err)
		}
	}
	return r, nil
}

func main() {
	var (
		expectFile = flag.String("expect", "", "file of tests known to fail for every runtime, with reasons")
		baseline   = flag.String("baseline", "", "go test -json output of the baseline run (io.containerd.runc.v2)")
		mdOut      = flag.String("md", "", "write a Markdown summary here")
		logDir     = flag.String("log-dir", "", "write RUN.log (the verbose text output) here")
		noSkips    = flag.Bool("no-skips", false, "a skipped test or subtest is a problem (run.sh sets it under CI)")
	)
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: report [-expect FILE] [-baseline RUN.json] [-md FILE] [-log-dir DIR] [-no-skips] RUN.json...")
		os.Exit(2)
	}
	if err := mainErr(*expectFile, *baseline, *mdOut, *logDir, *noSkips, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

var errChecks = errors.New("checks failed")

func mainErr(expectFile, baseline, mdOut, logDir string, noSkips bool, files []string) error {
	var exp Expectations
	if expectFile != "" {
		f, err := os.Open(expectFile)
		if err != nil {
			return err
		}
		exp, err = ParseExpectations(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", expectFile, err)
		}
	}
	var runs []*Run
	var base *Run
	for _, p := range files {
		r, err := load(p)
		if err != nil {
			return err
		}
		runs = append(runs, r)
		if baseline != "" && filepath.Clean(p) == filepath.Clean(baseline) {
			base = r
		}
	}
	if baseline != "" && base == nil {
		r, err := load(baseline)
		if err != nil {
			return err
		}
		base = r
	}
	if logDir != "" {
		for _, r := range runs {
			if err := os.WriteFile(filepath.Join(logDir, r.Name+".log"), []byte(strings.Join(r.Output, "")), 0o644); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(logDir, r.Name+".failures.txt"), []byte(r.FailureLogs()), 0o644); err != nil {
				return err
			}
		}
	}

	var md strings.Builder
	ok := true
	md.WriteString("| runtime | tests passed | failed | skipped | subtests passed | failed | skipped | duration |\n")
	md.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range runs {
		c, s := r.counts(false), r.counts(true)
		fmt.Fprintf(&md, "| %s | %d | %d | %d | %d | %d | %d | %.0f s |\n", r.Name, c.Pass, c.Fail, c.Skip, s.Pass, s.Fail, s.Skip, r.Elapsed)
	}
	md.WriteString("\n")
	var problems []string
	for _, r := range runs {
		if len(r.Status) == 0 {
			problems = append(problems, fmt.Sprintf("%s: no test ran", r.Name))
		}
		failed := r.Failed()
		if len(failed) > 0 {
			fmt.Fprintf(&md, "Failed with %s:\n\n", r.Name)
			for _, t := range failed {
				reason := exp[t]
				if reason == "" && exp != nil {
					reason = "(parent of listed subtests)"
					for _, u := range Unexpected(r, exp) {
						if u == t {
							reason = "**UNEXPECTED**"
						}
					}
				}
				fmt.Fprintf(&md, "- %s (%s) %s\n", t, r.Status[t], reason)
			}
			md.WriteString("\n")
		}
		if exp != nil {
			for _, t := range Unexpected(r, exp) {
				problems = append(problems, fmt.Sprintf("%s: %s failed and is not in the known failures", r.Name, t))
			}
			var stale []string
			for t := range exp {
				if r.Status[t] == Pass {
					stale = append(stale, t)
				}
			}
			sort.Strings(stale)
			for _, t := range stale {
				fmt.Fprintf(os.Stderr, "report: note: %s passed with %s although it is listed as a known failure\n", t, r.Name)
			}
		}
		if noSkips {
			// A skipped test tested nothing: under CI the machine must
			// have whatever the test looked for.
			for _, t := range r.Skipped() {
				problems = append(problems, fmt.Sprintf("%s: %s skipped", r.Name, t))
			}
		}
		if base != nil && r != base {
			for _, t := range Regressions(base, r) {
				problems = append(problems, fmt.Sprintf("%s: %s passed with %s but not here", r.Name, t, base.Name))
			}
		}
		if r.PkgFail && exp == nil && base == nil && len(failed) == 0 {
			problems = append(problems, fmt.Sprintf("%s: the test binary failed outside any test", r.Name))
		}
	}
	if len(problems) > 0 {
		md.WriteString("Problems:\n\n")
		for _, p := range problems {
			md.WriteString("- " + p + "\n")
		}
		ok = false
	}
	if mdOut != "" {
		if err := os.WriteFile(mdOut, []byte(md.String()), 0o644); err != nil {
			return err
		}
	}
	fmt.Print(md.String())
	// The closing line counts as failed only what breaks the rule: known
	// failures (they fail with io.containerd.runc.v2 too) are reported above it.
	for _, r := range runs {
		c := r.counts(false)
		failedTop := c.Fail
		if exp != nil {
			unexpected := map[string]bool{}
			for _, t := range Unexpected(r, exp) {
				unexpected[strings.SplitN(t, "/", 2)[0]] = true
			}
			failedTop = len(unexpected)
			if known := c.Fail - failedTop; known > 0 {
				fmt.Printf("%s: %d known failure(s), failing with io.containerd.runc.v2 too (test/integration/known-failures.txt)\n", r.Name, known)
			}
		}
		fmt.Printf("%s: %d passed, %d failed, %d skipped\n", r.Name, c.Pass, failedTop, c.Skip)
	}
	if !ok {
		return errChecks
	}
	return nil
}
