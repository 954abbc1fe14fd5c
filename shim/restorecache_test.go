// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"errors"
	"os"
	"testing"
)

// TestWithEnv: the variables are there for fn only; one that was set
// before gets its value back, one that was not is removed, fn's error is
// returned.
func TestWithEnv(t *testing.T) {
	t.Setenv("RRC_TEST_HAD", "before")
	os.Unsetenv("RRC_TEST_NEW")
	s := &TaskService{}
	boom := errors.New("boom")
	err := s.withEnv([]string{"RRC_TEST_HAD=during", "RRC_TEST_NEW=x=y"}, func() error {
		if got := os.Getenv("RRC_TEST_HAD"); got != "during" {
			t.Errorf("RRC_TEST_HAD in fn = %q", got)
		}
		if got := os.Getenv("RRC_TEST_NEW"); got != "x=y" {
			t.Errorf("RRC_TEST_NEW in fn = %q", got)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("withEnv = %v, want fn's error", err)
	}
	if got := os.Getenv("RRC_TEST_HAD"); got != "before" {
		t.Errorf("RRC_TEST_HAD after = %q, want before", got)
	}
	if _, ok := os.LookupEnv("RRC_TEST_NEW"); ok {
		t.Error("RRC_TEST_NEW still set after withEnv")
	}
	// No variables: fn runs as is.
	ran := false
	if err := s.withEnv(nil, func() error { ran = true; return nil }); err != nil || !ran {
		t.Errorf("withEnv(nil) = %v, ran %v", err, ran)
	}
	// No cache, or one not written yet: no variables.
	var none *restoreCache
	if env := none.env(); env != nil {
		t.Errorf("nil cache env = %v", env)
	}
	pending := &restoreCache{done: make(chan struct{})}
	if env := pending.env(); env != nil {
		t.Errorf("unwritten cache env = %v", env)
	}
	close(pending.done)
	if env := pending.env(); len(env) != 2 {
		t.Errorf("written cache env = %v", env)
	}
}
