// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/iorrc/rrc/shim/metrics"
	"github.com/iorrc/rrc/shim/settings"
)

// metricsCmd implements `rrcctl metrics`: the host's one metrics server,
// reading the status files every shim of the host writes.
func metricsCmd(ctx context.Context, configPath string, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("rrcctl metrics", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "host:port to serve /metrics on (default: metrics_address of the shim configuration)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		if err == nil {
			fs.Usage()
		}
		return errUsage
	}
	cfg, err := settings.LoadConfig(configPath)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	addr := cfg.MetricsAddress
	if *listen != "" {
		addr = *listen
	}
	if addr == "" {
		return errors.New("metrics: no address: set metrics_address in the shim configuration or pass -listen")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(cfg.StateDir))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stderr, "rrcctl: serving metrics of the containers under %s at http://%s/metrics\n", cfg.StateDir, ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shut)
	}
}
