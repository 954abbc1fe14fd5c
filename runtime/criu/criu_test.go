// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/criutest"
)

// fakeCRIU is the test binary run as CRIU by the tests that set
// RRC_FAKE_CRIU: TestMain then acts as `criu swrk 3`, the way CRIU 4.2.1
// behaves: VERSION keeps the session, DUMP sends a "pre-dump"
// notification, waits for the answer, replies and exits.
var fakeCRIU = CRIUCommand{Argv: []string{os.Args[0]}}

func TestMain(m *testing.M) {
	if os.Getenv("RRC_FAKE_CRIU") != "" {
		delay, _ := strconv.Atoi(os.Getenv("RRC_FAKE_CRIU_DELAY_MS"))
		criutest.ServeSwrk(criutest.SwrkOptions{Mode: os.Getenv("RRC_FAKE_CRIU_MODE"), WriteImages: os.Getenv("RRC_FAKE_CRIU_IMAGES") != "",
			StartDelay: time.Duration(delay) * time.Millisecond})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCRIUService(t *testing.T) {
	t.Setenv("RRC_FAKE_CRIU", "1")
	svc, err := NewCRIUService(fakeCRIU, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := svc.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	pids := map[int]bool{}
	for i := 0; i < 3; i++ {
		var notified []string
		var after error = syscall.EINVAL
		sw, err := svc.take(ctx) // peek at the process used, then give it back
		if err != nil {
			t.Fatal(err)
		}
		pids[sw.pid] = true
		svc.mu.Lock()
		svc.spare = sw
		svc.mu.Unlock()
		_, err = svc.Dump(ctx, &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1)}, func(s string) error { notified = append(notified, s); return nil }, func(e error) { after = e })
		if err != nil {
			t.Fatalf("dump %d: %v", i, err)
		}
		if strings.Join(notified, ",") != "pre-dump" || after != nil {
			t.Fatalf("dump %d: notified %v, afterDump got %v", i, notified, after)
		}
	}
	if len(pids) != 3 {
		t.Errorf("3 dumps used %d CRIU processes; each dump needs a fresh one", len(pids))
	}
	// A failing notification handler makes the dump fail.
	_, err = svc.Dump(ctx, &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1)}, func(string) error { return syscall.EBUSY }, nil)
	if err == nil || !strings.Contains(err.Error(), "device or resource busy") {
		t.Fatalf("dump with failing freeze: err = %v", err)
	}
}
