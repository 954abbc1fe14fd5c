// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iorrc/rrc/replication"
)

// setting is one effective replication setting of a container.
type setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// settingsOf lists a container's replication settings, defaults filled in.
func settingsOf(c replication.Config) []setting {
	out := []setting{{"role", string(c.Role)}, {"pair", c.Pair}, {"mode", string(c.Mode)}, {"epoch", c.Epoch.String()}}
	switch c.Role {
	case replication.RolePrimary:
		out = append(out, setting{"peer", c.Peer})
	case replication.RoleBackup:
		out = append(out, setting{"listen", c.Listen})
	}
	if n := c.ExpectedPeerName(); n != "" {
		out = append(out, setting{"peer name (TLS)", n})
	}
	out = append(out,
		setting{"heartbeat", fmt.Sprintf("%s, failed after %d missed (%s)", c.Heartbeat, c.HeartbeatMisses, c.Heartbeat*time.Duration(c.HeartbeatMisses))},
		setting{"ack timeout", c.AckTimeout.String()},
		setting{"failing after", fmt.Sprintf("%d failed checkpoints or %s", c.FailingAfterFailures, c.FailingAfter)},
		setting{"skip idle ticks", fmt.Sprint(c.SkipIdle)})
	if sv := c.Service; sv != nil && sv.Address != nil {
		mac := "derived from the address"
		if sv.MAC != nil {
			mac = sv.MAC.String()
		}
		out = append(out, setting{"service", fmt.Sprintf("%s on %s, MAC %s", sv.Address, sv.Link, mac)})
	} else {
		out = append(out, setting{"service", "the network namespace the spec names (adopted)"})
	}
	return out
}

// describeCmd implements `rrcctl describe ID`.
func describeCmd(ctx context.Context, s session, args []string, timeout time.Duration, w io.Writer) error {
	fs := flag.NewFlagSet("rrcctl describe", flag.ContinueOnError)
	output := fs.String("o", "text", "output format: text or json")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		if err == nil {
			fmt.Fprintln(fs.Output(), "usage: rrcctl describe [-o text|json] ID")
		}
		return errUsage
	}
	id := fs.Arg(0)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	views, err := s.views(ctx, id)
	if err != nil {
		return err
	}
	if len(views) == 0 {
		return fmt.Errorf("no container %q runs through io.rrc.v1 in namespace %s", id, s.ns)
	}
	switch *output {
	case "json":
		return writeJSON(w, views[0])
	case "text":
		return describeText(w, views[0], time.Now())
	}
	return fmt.Errorf("-o %q: want text or json", *output)
}

func describeText(w io.Writer, v containerView, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, a...)) }
	line("Container", "%s", v.ID)
	if v.Image != "" {
		line("Image", "%s", v.Image)
	}
	task := v.Task
	if v.Pid != 0 {
		task += fmt.Sprintf(", pid %d", v.Pid)
	}
	line("Task", "%s", task)
	line("Replication", "%s", v.Replication)
	if v.ReplicationError != "" {
		line("Why", "%s", v.ReplicationError)
	}
	for _, st := range v.Settings {
		line("  "+st.Name, "%s", st.Value)
	}
	var details []string
	if p := v.Status; p != nil {
		e := p.Engine
		state, committed, lag := describe(*p, now)
		since := ""
		if !e.StateSince.IsZero() {
			since = fmt.Sprintf(" since %s (%s)", e.StateSince.Local().Format(time.DateTime), now.Sub(e.StateSince).Round(time.Second))
		}
		line("State", "%s%s", state, since)
		if len(e.StateSeconds) > 0 {
			var parts []string
			for _, st := range slices.Sorted(maps.Keys(e.StateSeconds)) {
				parts = append(parts, fmt.Sprintf("%s %s", st, (time.Duration(e.StateSeconds[st]*float64(time.Second))).Round(time.Millisecond)))
			}
			line("Time in states", "%s", strings.Join(parts, ", "))
		}
		line("Committed", "epoch %s, lag %s", committed, lag)
		line("Status file", "written %s ago by shim pid %d", now.Sub(p.UpdatedAt).Round(time.Millisecond), p.ShimPid)
		if p.Netns != "" {
			line("Network namespace", "%s", p.Netns)
		}
		if e.Failover == nil && e.Role == replication.RoleBackup {
			line("Failover", "none yet")
		}
		details = detailLines(v.ID, *p)
	} else if v.StatusError != "" {
		line("State", "unknown (%s)", v.StatusError)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range details {
		fmt.Fprintln(w, d)
	}
	return nil
}
