// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command rrcctl is the operator's view of io.rrc.v1: which containers run
// through it, their replication role and state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/shim/settings"
	"github.com/iorrc/rrc/shim/status"
)

// errUsage: the usage was printed; exit 2.
var errUsage = errors.New("usage")

// version is set by the Makefile at link time.
var version = "dev"

const usage = `usage: rrcctl [flags] COMMAND

Commands:
  status        list the containers run by io.rrc.v1 with their replication role and state
  annotations   list the io.rrc.* annotations a container accepts, with defaults
  version       print the version
  pki           write a quick CA and peer certificates to try replication out
                (rrcctl pki -h)

Flags:
`

func main() {
	fs := flag.NewFlagSet("rrcctl", flag.ContinueOnError)
	address := fs.String("address", envOr("CONTAINERD_ADDRESS", "/run/containerd/containerd.sock"), "containerd socket (env CONTAINERD_ADDRESS)")
	ns := fs.String("n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace (env CONTAINERD_NAMESPACE)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	config := fs.String("config", settings.ConfigPath(), "shim configuration file, for its state_dir (env "+settings.ConfigEnv+")")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() >= 1 && fs.Arg(0) == "pki" {
		if err := pkiCmd(fs.Args()[1:], os.Stdout, os.Stderr); err != nil {
			if errors.Is(err, errUsage) {
				os.Exit(2)
			}
			fmt.Fprintln(os.Stderr, "rrcctl:", err)
			os.Exit(1)
		}
		return
	}
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var err error
	switch fs.Arg(0) {
	case "status":
		err = printStatus(namespaces.WithNamespace(ctx, *ns), os.Stdout, *address, *ns, *config)
	case "annotations":
		printAnnotations(os.Stdout)
	case "version":
		fmt.Printf("rrcctl %s (runtime %s)\n", version, settings.RuntimeName)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rrcctl:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func printStatus(ctx context.Context, w io.Writer, address, ns, configPath string) error {
	// The engine's state is in the status files the shims write under the
	// configured state_dir; without a readable configuration the table
	// still shows what containerd knows.
	stateDir := ""
	if cfg, err := settings.LoadConfig(configPath); err == nil {
		stateDir = cfg.StateDir
	} else {
		fmt.Fprintf(os.Stderr, "rrcctl: %v (replication state not shown)\n", err)
	}
	client, err := containerd.New(address)
	if err != nil {
		return fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer client.Close()
	containers, err := client.Containers(ctx, fmt.Sprintf("runtime.name==%s", settings.RuntimeName))
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tTASK\tPID\tREPLICATION\tPEER\tMODE\tEPOCH\tSTATE\tCOMMITTED\tLAG")
	var details []string
	for _, c := range containers {
		taskState, pid := "-", "-"
		if t, err := c.Task(ctx, nil); err == nil {
			if st, err := t.Status(ctx); err == nil {
				taskState, pid = string(st.Status), fmt.Sprint(t.Pid())
			}
		}
		repl, peer, mode, epoch := "unreplicated", "-", "-", "-"
		spec, err := c.Spec(ctx)
		if err != nil {
			repl = "unknown: " + err.Error()
		} else if cfg, err := settings.ParseAnnotations(c.ID(), spec.Annotations); err != nil {
			repl = "invalid annotations"
		} else if cfg.Enabled() && settings.IsCRISandbox(spec.Annotations) {
			repl = "unreplicated (pod sandbox)"
		} else if cfg.Enabled() {
			repl, mode, epoch = string(cfg.Role), string(cfg.Mode), cfg.Epoch.String()
			peer = cfg.Peer
			if cfg.Role == replication.RoleBackup {
				peer = "listens on " + cfg.Listen
			}
		}
		state, committed, lag := "-", "-", "-"
		if stateDir != "" && mode != "-" {
			st, err := status.Read(status.File(stateDir, ns, c.ID()))
			if err != nil {
				state = "unknown (" + err.Error() + ")"
			} else {
				state, committed, lag = describe(st)
				details = append(details, detailLines(c.ID(), st)...)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID(), taskState, pid, repl, peer, mode, epoch, state, committed, lag)
	}
	if len(containers) == 0 {
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

func printAnnotations(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ANNOTATION\tDEFAULT\tMEANING")
	for _, a := range settings.Annotations() {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Key, a.Default, a.Doc)
	}
	tw.Flush()
}
