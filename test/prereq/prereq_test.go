// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package prereq

import (
	"fmt"
	"strings"
	"testing"
)

// recorder notes what Missing asked for instead of stopping the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Skipf(format string, args ...any)  { r.skipped = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestMissing(t *testing.T) {
	for _, tc := range []struct {
		ci         string
		wantFailed bool
	}{{"", false}, {"false", false}, {"0", false}, {"banana", false}, {"true", true}, {"1", true}, {"TRUE", true}} {
		t.Setenv("CI", tc.ci)
		r := &recorder{TB: t}
		Missing(r, "%s", "frobnicator")
		if tc.wantFailed && (r.failed == "" || r.skipped != "") {
			t.Errorf("CI=%q: skipped %q, failed %q; want a failure", tc.ci, r.skipped, r.failed)
		}
		if !tc.wantFailed && (r.skipped == "" || r.failed != "") {
			t.Errorf("CI=%q: skipped %q, failed %q; want a skip", tc.ci, r.skipped, r.failed)
		}
	}
}

func TestCommands(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{TB: t}
	Commands(r, "sh", "no-such-command-rrc", "also-missing-rrc")
	if !strings.Contains(r.failed, "no-such-command-rrc, also-missing-rrc not on PATH") {
		t.Fatalf("failed with %q", r.failed)
	}
	r = &recorder{TB: t}
	Commands(r, "sh")
	if r.failed != "" || r.skipped != "" {
		t.Fatalf("sh is there: skipped %q, failed %q", r.skipped, r.failed)
	}
}
