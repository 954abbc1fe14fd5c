// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package status is what a shim publishes about each replicated container
// for rrcctl status: the schema of the status file and where it lives.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"

	"github.com/iorrc/rrc/replication"
)

// File is where the shim publishes the engine's status of container id in
// containerd namespace ns, for rrcctl status:
// <state_dir>/status/<namespace>/<id>.json.
func File(stateDir, ns, id string) string {
	return filepath.Join(stateDir, "status", ns, id+".json")
}

// Published is the content of a status file: the engine's Status plus
// what only the shim knows.
type Published struct {
	ID        string             `json:"id"`
	Namespace string             `json:"namespace"`
	Netns     string             `json:"netns,omitempty"`
	ShimPid   int                `json:"shim_pid"`
	UpdatedAt time.Time          `json:"updated_at"`
	Engine    replication.Status `json:"engine"`
}

// Publisher writes a status file every interval and on demand
// (Kick, e.g. on a state change) until stopped; Stop removes the file.
type Publisher struct {
	path   string
	base   Published
	get    func() replication.Status
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	last   replication.State
	period time.Duration
}

func StartPublisher(ctx context.Context, path string, base Published, period time.Duration, get func() replication.Status) (*Publisher, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status directory: %w", err)
	}
	p := &Publisher{path: path, base: base, get: get, period: period,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := p.write(); err != nil {
		return nil, err
	}
	go p.run(ctx)
	return p, nil
}

func (p *Publisher) run(ctx context.Context) {
	defer close(p.done)
	// A short poll so that a state change (e.g. in-sync, promotion) shows
	// within 100 ms; the file is rewritten at least every period.
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	lastWrite := time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		case <-t.C:
			if p.get().State == p.last && time.Since(lastWrite) < p.period {
				continue
			}
		}
		if err := p.write(); err != nil {
			log.G(ctx).WithError(err).Warn("writing replication status file")
		}
		lastWrite = time.Now()
	}
}

// Kick rewrites the file now.
func (p *Publisher) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// write replaces the file atomically (rename), so that a reader never
// sees half a file.
func (p *Publisher) write() error {
	s := p.base
	s.Engine = p.get()
	s.UpdatedAt = time.Now().UTC()
	p.last = s.Engine.State
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	tmp := p.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	if err := os.Rename(tmp, p.path); err != nil {
		return fmt.Errorf("replace status: %w", err)
	}
	return nil
}

// Stop ends the publisher and removes the file.
func (p *Publisher) Stop() error {
	close(p.stop)
	<-p.done
	os.Remove(p.path + ".tmp")
	if err := os.Remove(p.path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove status file: %w", err)
	}
	return nil
}

// List reads every status file under stateDir, of every namespace; a file
// that cannot be read (removed meanwhile, half written by an old shim) is
// left out and its error returned beside the others.
func List(stateDir string) ([]Published, []error) {
	paths, err := filepath.Glob(filepath.Join(stateDir, "status", "*", "*.json"))
	if err != nil {
		return nil, []error{fmt.Errorf("list status files: %w", err)}
	}
	var out []Published
	var errs []error
	for _, p := range paths {
		st, err := Read(p)
		if err != nil {
			if !errors.Is(err, errNoFile) {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, st)
	}
	return out, errs
}

var errNoFile = errors.New("no status file")

// Read reads a status file.
func Read(path string) (Published, error) {
	var st Published
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, errNoFile
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("status file %s: %w", path, err)
	}
	return st, nil
}
