// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
	"github.com/iorrc/rrc/shim/status"
)

// containerView is what rrcctl knows of one container: containerd's side
// (task, annotations) and the shim's status file.
type containerView struct {
	ID          string `json:"id"`
	Task        string `json:"task"`
	Pid         uint32 `json:"pid,omitempty"`
	Replication string `json:"replication"` // primary, backup, unreplicated, unknown or invalid annotations
	// ReplicationError says why Replication is unknown or invalid.
	ReplicationError string              `json:"replication_error,omitempty"`
	Config           *replication.Config `json:"-"`                  // the annotations' settings, defaults filled in
	Settings         []setting           `json:"settings,omitempty"` // Config, as describe prints it
	Annotations      map[string]string   `json:"annotations,omitempty"`
	Image            string              `json:"image,omitempty"`
	Status           *status.Published   `json:"status,omitempty"`
	StatusError      string              `json:"status_error,omitempty"`
}

// session is a connection to containerd and where the status files are.
type session struct {
	address, ns, configPath string
	stateDir                string // "" when the configuration cannot be read
	warn                    io.Writer
}

// views lists the containers of the namespace that run through io.rrc.v1,
// or only id if it is set.
func (s session) views(ctx context.Context, id string) ([]containerView, error) {
	client, err := containerd.New(s.address)
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", s.address, err)
	}
	defer client.Close()
	filter := fmt.Sprintf("runtime.name==%s", settings.RuntimeName)
	if id != "" {
		filter += fmt.Sprintf(",id==%s", id)
	}
	containers, err := client.Containers(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]containerView, 0, len(containers))
	for _, c := range containers {
		out = append(out, s.view(ctx, c))
	}
	return out, nil
}

func (s session) view(ctx context.Context, c containerd.Container) containerView {
	v := containerView{ID: c.ID(), Task: "-", Replication: "unreplicated"}
	if t, err := c.Task(ctx, nil); err == nil {
		if st, err := t.Status(ctx); err == nil {
			v.Task, v.Pid = string(st.Status), t.Pid()
		}
	}
	if info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata); err == nil {
		v.Image = info.Image
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		v.Replication, v.ReplicationError = "unknown", err.Error()
		return v
	}
	cfg, err := settings.ParseAnnotations(c.ID(), spec.Annotations)
	switch {
	case err != nil:
		v.Replication, v.ReplicationError = "invalid annotations", err.Error()
		return v
	case !cfg.Enabled():
		return v
	case settings.IsCRISandbox(spec.Annotations):
		v.Replication = "unreplicated (pod sandbox)"
		return v
	}
	d := cfg.WithDefaults()
	v.Config, v.Settings, v.Replication = &d, settingsOf(d), string(cfg.Role)
	v.Annotations = map[string]string{}
	for k, val := range spec.Annotations {
		if strings.HasPrefix(k, settings.AnnotationPrefix) {
			v.Annotations[k] = val
		}
	}
	if s.stateDir != "" {
		if st, err := status.Read(status.File(s.stateDir, s.ns, c.ID())); err != nil {
			v.StatusError = err.Error()
		} else {
			v.Status = &st
		}
	}
	return v
}

// newSession reads the shim configuration for its state_dir; without a
// readable one rrcctl still shows what containerd knows.
func newSession(address, ns, configPath string, warn io.Writer) session {
	s := session{address: address, ns: ns, configPath: configPath, warn: warn}
	if cfg, err := settings.LoadConfig(configPath); err == nil {
		s.stateDir = cfg.StateDir
	} else {
		fmt.Fprintf(warn, "rrcctl: %v (replication state not shown)\n", err)
	}
	return s
}

// statusCmd implements `rrcctl status [-w] [-o table|json]`.
func statusCmd(ctx context.Context, s session, args []string, timeout time.Duration, w io.Writer) error {
	fs := flag.NewFlagSet("rrcctl status", flag.ContinueOnError)
	watch := fs.Bool("w", false, "watch: print the status again every -interval until interrupted")
	interval := fs.Duration("interval", time.Second, "with -w: how often")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	once := func() error {
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		views, err := s.views(c, "")
		if err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(w, views)
		}
		return printStatusTable(w, views)
	}
	if !*watch {
		return once()
	}
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		if *output == "table" {
			fmt.Fprint(w, "\033[H\033[2J") // clear the terminal, as watch(1) does
			fmt.Fprintf(w, "every %s, %s (Ctrl-C ends)\n\n", *interval, time.Now().Format(time.TimeOnly))
		}
		if err := once(); err != nil {
			fmt.Fprintln(w, "rrcctl:", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printStatusTable(w io.Writer, views []containerView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tTASK\tPID\tREPLICATION\tPEER\tMODE\tEPOCH\tSTATE\tCOMMITTED\tLAG")
	var details []string
	for _, v := range views {
		pid, repl, peer, mode, epoch := "-", v.Replication, "-", "-", "-"
		if v.Pid != 0 {
			pid = fmt.Sprint(v.Pid)
		}
		if v.ReplicationError != "" {
			details = append(details, v.ID+": "+v.ReplicationError)
		}
		if c := v.Config; c != nil {
			peer, mode, epoch = c.Peer, string(c.Mode), c.Epoch.String()
			if c.Role == replication.RoleBackup {
				peer = "listens on " + c.Listen
			}
		}
		if st := v.Status; st != nil && st.Engine.Role == replication.RolePrimary && v.Config != nil && v.Config.Role == replication.RoleBackup {
			// A backup that took over and was protected (rrcctl protect).
			repl, peer = "primary (protected after a failover)", st.Engine.Peer
		}
		state, committed, lag := "-", "-", "-"
		switch {
		case v.Status != nil:
			state, committed, lag = describe(*v.Status, time.Now())
			details = append(details, detailLines(v.ID, *v.Status)...)
		case v.StatusError != "":
			state = "unknown (" + v.StatusError + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Task, pid, repl, peer, mode, epoch, state, committed, lag)
	}
	if len(views) == 0 {
		fmt.Fprintf(tw, "(no container runs through %s in this namespace)\n", settings.RuntimeName)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range details {
		fmt.Fprintln(w, d)
	}
	return nil
}
