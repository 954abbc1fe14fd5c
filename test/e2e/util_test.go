// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// findShim returns the pid of the shim (io.rrc.v1 or runc.v2) serving
// container id in containerd namespace ns (any namespace when ns is ""), 0
// if there is none.
func findShim(ns, id string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasSuffix(args[0], "containerd-shim-rrc-v1") && !strings.HasSuffix(args[0], "containerd-shim-runc-v2") {
			continue
		}
		if flag(args, "-id") == id && (ns == "" || flag(args, "-namespace") == ns) {
			pid, _ := strconv.Atoi(e.Name())
			return pid
		}
	}
	return 0
}

// flag is the value following name in args, "" if absent.
func flag(args []string, name string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}

// shimGone reports an error while a shim of container id runs in
// containerd namespace ns ("": any).
func shimGone(ns, id string) error {
	if pid := findShim(ns, id); pid != 0 {
		return fmt.Errorf("shim of %s still runs (pid %d) after delete", id, pid)
	}
	return nil
}
