package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"

	"github.com/iorrc/rrc/replication"
)

// StatusFile is where the shim publishes the engine's status of container
// id in containerd namespace ns, for rrcctl status:
// <state_dir>/status/<namespace>/<id>.json.
func StatusFile(stateDir, ns, id string) string {
	return filepath.Join(stateDir, "status", ns, id+".json")
}

// PublishedStatus is the content of a status file: the engine's Status
// plus what only the shim knows.
type PublishedStatus struct {
	ID        string             `json:"id"`
	Namespace string             `json:"namespace"`
	Netns     string             `json:"netns,omitempty"`
	ShimPid   int                `json:"shim_pid"`
	UpdatedAt time.Time          `json:"updated_at"`
	Engine    replication.Status `json:"engine"`
}

// statusPublisher writes a status file every interval and on demand
// (Kick, e.g. on a state change) until stopped; Stop removes the file.
type statusPublisher struct {
	path   string
	base   PublishedStatus
	get    func() replication.Status
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	last   replication.State
	period time.Duration
}

func startStatusPublisher(ctx context.Context, path string, base PublishedStatus, period time.Duration, get func() replication.Status) (*statusPublisher, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status directory: %w", err)
	}
	p := &statusPublisher{path: path, base: base, get: get, period: period,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := p.write(); err != nil {
		return nil, err
	}
	go p.run(ctx)
	return p, nil
}

func (p *statusPublisher) run(ctx context.Context) {
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
func (p *statusPublisher) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// write replaces the file atomically (rename), so that a reader never
// sees half a file.
func (p *statusPublisher) write() error {
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
func (p *statusPublisher) Stop() error {
	close(p.stop)
	<-p.done
	os.Remove(p.path + ".tmp")
	if err := os.Remove(p.path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove status file: %w", err)
	}
	return nil
}
