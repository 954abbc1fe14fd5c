// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// mergeSpare fills, in the background after each merge, the file the next
// merge writes the full pages file into (criuimage.MergeParentReusing): its
// memory is then in use already. A new file's memory may first have to be
// faulted in again by the host of a virtual machine that was handed it
// back when it was free (docs/CHECKPOINT.md has the figures), and that wait
// was on the way to the send, hence in the output's latency.
type mergeSpare struct {
	ready chan string // a filled spare, at most one
	busy  atomic.Bool
	wg    sync.WaitGroup
}

func newMergeSpare() *mergeSpare { return &mergeSpare{ready: make(chan string, 1)} }

// take returns the filled spare, or "" if none is ready (never waits).
func (s *mergeSpare) take() string {
	select {
	case p := <-s.ready:
		return p
	default:
		return ""
	}
}

// fill starts filling a spare of size bytes in dir, unless one is being
// filled or is ready.
func (s *mergeSpare) fill(dir string, size int64, log *slog.Logger) {
	if size <= 0 || len(s.ready) > 0 || !s.busy.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.busy.Store(false)
		p, err := fillSpare(dir, size)
		if err != nil {
			log.Debug("memory tracking: filling the merge's spare file", "err", err)
			return
		}
		select {
		case s.ready <- p:
		default:
			os.Remove(p)
		}
	}()
}

// fillSpare writes size bytes of zeros into a new file in dir, sized first
// (for the large folios of a huge=within_size tmpfs, as the merge does).
func fillSpare(dir string, size int64) (string, error) {
	f, err := os.CreateTemp(dir, ".merge-spare-*")
	if err != nil {
		return "", err
	}
	err = f.Truncate(size)
	zeros := make([]byte, 1<<20)
	for off := int64(0); err == nil && off < size; off += int64(len(zeros)) {
		_, err = f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// close waits for a fill in progress and removes what is left.
func (s *mergeSpare) close() {
	s.wg.Wait()
	if p := s.take(); p != "" {
		os.Remove(p)
	}
}

// largestPages is the size of the largest pages-*.img in dir: the spare
// the next merge of that image set needs.
func largestPages(dir string) int64 {
	names, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	var max int64
	for _, n := range names {
		if fi, err := os.Stat(n); err == nil && fi.Size() > max {
			max = fi.Size()
		}
	}
	return max
}
