// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package prereq is how a test says that something it needs from the
// machine is missing (root, a command, a kernel feature). On a developer's
// machine the test is skipped, naming what is missing; under continuous
// integration (CI set to a true value, as `make test` does) it fails
// instead, so that a run cannot pass by skipping what it was meant to test.
package prereq

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// CI reports whether the environment variable CI holds a true value
// (strconv.ParseBool: "true", "1", ...).
func CI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// Missing stops the test because a prerequisite is missing: Skip
// locally, Fatal under CI. The message names the prerequisite.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	what := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("prerequisite missing: %s (CI=%s: a missing prerequisite fails the test)", what, os.Getenv("CI"))
		return // for a testing.TB whose Fatalf returns (this package's test)
	}
	t.Skipf("prerequisite missing: %s (with CI=true this fails)", what)
}

// Root stops the test unless it runs as root; why says what needs it.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (%s)", why)
	}
}

// Commands stops the test unless every command is found by LookPath,
// naming all that are not.
func Commands(t testing.TB, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		Missing(t, "%s not on PATH", strings.Join(missing, ", "))
	}
}

// Path stops the test unless path exists; what names what provides it.
func Path(t testing.TB, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "%s (%s)", path, what)
	}
}

// Long skips a long test under -short, except under CI, where -short is
// ignored: a CI run has to run everything.
func Long(t testing.TB, what string) {
	t.Helper()
	if testing.Short() && !CI() {
		t.Skipf("-short: %s", what)
	}
}

// sbinDirs are searched after PATH: tests run by a user whose PATH lacks
// the sbin directories still find iptables, ip and criu there.
var sbinDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// LookPath is exec.LookPath, then the sbin and bin directories.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}
