// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package status

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
)

// TestStatusPublisher: the file appears at once, follows state changes
// within the poll interval, and is removed on Stop.
func TestStatusPublisher(t *testing.T) {
	dir := t.TempDir()
	path := File(dir, "ns", "c1")
	var state atomic.Value
	state.Store(replication.StateStarting)
	p, err := StartPublisher(context.Background(), path, Published{ID: "c1", Namespace: "ns"}, time.Hour,
		func() replication.Status { return replication.Status{State: state.Load().(replication.State)} })
	if err != nil {
		t.Fatal(err)
	}
	read := func() Published {
		var s Published
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := read(); s.Engine.State != replication.StateStarting || s.ID != "c1" {
		t.Fatalf("first status %+v", s)
	}
	state.Store(replication.StateInSync)
	deadline := time.Now().Add(2 * time.Second)
	for read().Engine.State != replication.StateInSync {
		if time.Now().After(deadline) {
			t.Fatal("state change not published")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("status file left: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*")); len(left) > 0 {
		t.Errorf("left in the status dir: %v", left)
	}
}
