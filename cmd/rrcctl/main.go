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
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/iorrc/rrc/shim/settings"
)

// errUsage: the command's usage was printed; exit 2.
var errUsage = errors.New("usage")

// version is set by the Makefile at link time.
var version = "dev"

const usage = `usage: rrcctl [flags] COMMAND [command flags]

Commands:
  status [-w] [-interval D] [-o table|json]
                list the containers run by io.rrc.v1 with their replication role and
                state; -w prints it again every second until interrupted
  describe [-o text|json] ID
                one container: its settings, peer, state, time in each state, failover
  protect -backup HOST:PORT ID
                a container a failover restored on this host takes a new backup: the
                one listening at HOST:PORT (started with role backup); until it is in
                sync the container serves unprotected
  metrics [-listen ADDR]
                serve Prometheus metrics of every replicated container of this host
                (all namespaces) at http://ADDR/metrics until interrupted; ADDR defaults
                to the shim configuration's metrics_address
  annotations   list the io.rrc.* annotations a container accepts, with defaults
  completion bash
                print a bash completion script (source <(rrcctl completion bash))
  version       print the version
  pki           write a quick CA and peer certificates to try replication out
                (rrcctl pki -h)

Flags:
`

func main() {
	fs := flag.NewFlagSet("rrcctl", flag.ContinueOnError)
	address := fs.String("address", envOr("CONTAINERD_ADDRESS", "/run/containerd/containerd.sock"), "containerd socket (env CONTAINERD_ADDRESS)")
	ns := fs.String("n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace (env CONTAINERD_NAMESPACE)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on containerd after this long")
	config := fs.String("config", settings.ConfigPath(), "shim configuration file, for its state_dir (env "+settings.ConfigEnv+")")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() < 1 {
		fs.Usage()
		os.Exit(2)
	}
	// Interrupted: status -w and metrics end cleanly; other commands stop.
	ctx, stop := signal.NotifyContext(namespaces.WithNamespace(context.Background(), *ns), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := fs.Args()[1:]
	session := func() session { return newSession(*address, *ns, *config, os.Stderr) }
	var err error
	switch fs.Arg(0) {
	case "status":
		err = statusCmd(ctx, session(), args, *timeout, os.Stdout)
	case "describe":
		err = describeCmd(ctx, session(), args, *timeout, os.Stdout)
	case "protect":
		err = protectCmd(ctx, session(), args, *timeout, os.Stdout)
	case "metrics":
		err = metricsCmd(ctx, *config, args, os.Stderr)
	case "annotations":
		printAnnotations(os.Stdout)
	case "completion":
		err = completionCmd(args, os.Stdout)
	case "version":
		fmt.Printf("rrcctl %s (runtime %s)\n", version, settings.RuntimeName)
	case "pki":
		err = pkiCmd(args, os.Stdout, os.Stderr)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if errors.Is(err, errUsage) { // the command printed its usage
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

func printAnnotations(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ANNOTATION\tDEFAULT\tMEANING")
	for _, a := range settings.Annotations() {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Key, a.Default, a.Doc)
	}
	tw.Flush()
}
