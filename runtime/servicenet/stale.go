// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tmpGrace is how old a half-written owner record must be before
// CleanupStale removes it: younger ones may belong to a Create in progress.
const tmpGrace = time.Minute

// CleanupStale removes what crashed owners left in dir: every namespace
// whose owner record names a process that is gone (interfaces, bind mount,
// file, record), every namespace file without a record, and old
// half-written records. Namespaces of live owners are kept. It returns the
// names of the namespaces removed. A shim calls it when it starts (invariant
// 6 of docs/ARCHITECTURE.md); a missing dir is not an error.
func CleanupStale(ctx context.Context, dir string, log *slog.Logger) ([]string, error) {
	if log == nil {
		log = slog.Default()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("clean up stale service networks in %s: %w", dir, err)
	}
	records := map[string]bool{}
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), recordSuffix); ok {
			records[n] = true
		}
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return removed, errors.Join(append(errs, err)...)
		}
		name := e.Name()
		path := filepath.Join(dir, name)
		switch {
		case strings.HasSuffix(name, recordSuffix):
			n := strings.TrimSuffix(name, recordSuffix)
			r, err := readRecord(path)
			if err == nil && r.alive() {
				continue
			}
			if err := removeNamespace(ctx, filepath.Join(dir, n), r.HostNetns, r.HostLink, gatePath(dir, n), log); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove owner record %s: %w", path, err))
				continue
			}
			removed = append(removed, n)
			log.Info("removed stale service network", "netns", filepath.Join(dir, n), "owner_pid", r.PID)
		case strings.HasSuffix(name, recordSuffix+".tmp"):
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > tmpGrace {
				if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
				}
			}
		case records[name] || e.IsDir():
			// Handled with its record; directories are not ours.
		default:
			// A namespace file without a record: Create writes the
			// record first and Remove deletes it last, so no owner is
			// in the middle of using this one.
			if err := removeNamespace(ctx, path, "", "", gatePath(dir, name), log); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, name)
			log.Info("removed service network without owner record", "netns", path)
		}
	}
	// Gate namespaces whose container namespace has no record: a crash
	// between the two bind mounts' removals.
	gates, err := os.ReadDir(filepath.Join(dir, gateSubdir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("clean up stale gate namespaces: %w", err))
	}
	for _, e := range gates {
		if records[e.Name()] || e.IsDir() {
			continue
		}
		if err := removeNamespace(ctx, "", "", "", gatePath(dir, e.Name()), log); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("removed gate namespace without owner record", "netns", gatePath(dir, e.Name()))
	}
	return removed, errors.Join(errs...)
}
