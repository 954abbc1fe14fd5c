// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command registry serves OCI image archives/layouts read-only over the OCI
// distribution API, on plain HTTP and/or HTTPS with a throw-away CA.
//
//	registry -http 127.0.0.1:5000 -https 127.0.0.1:443 \
//	    -tls-name ghcr.io,registry.k8s.io -ca-out /tmp/ca.pem \
//	    -image ghcr.io/containerd/busybox:1.36=busybox.tar \
//	    -ready /tmp/registry.ready
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/iorrc/rrc/test/registry"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	var images, archives, tlsNames multi
	var (
		httpAddr  = flag.String("http", "", "plain HTTP listen address (host:port)")
		httpsAddr = flag.String("https", "", "HTTPS listen address (host:port)")
		caOut     = flag.String("ca-out", "", "write the generated CA certificate (PEM) here")
		ready     = flag.String("ready", "", "write the listen addresses here once serving (lines: 'http ADDR', 'https ADDR')")
		verbose   = flag.Bool("v", false, "log every request")
	)
	flag.Var(&images, "image", "REF=PATH[#NAME]: serve the image of the OCI archive or layout PATH (its only top-level entry, or the one named NAME) as REF; repeatable")
	flag.Var(&archives, "archive", "PATH: serve every top-level entry of the OCI archive or layout PATH that has a full image name annotation; repeatable")
	flag.Var(&tlsNames, "tls-name", "DNS name or IP for the HTTPS certificate (comma-separated, repeatable)")
	flag.Parse()
	log.SetPrefix("registry: ")
	log.SetFlags(log.Ltime | log.Lmicroseconds)

	reg := registry.New()
	if *verbose {
		reg.Logf = log.Printf
	}
	layouts := map[string]*registry.Layout{}
	load := func(p string) *registry.Layout {
		if l, ok := layouts[p]; ok {
			return l
		}
		l, err := registry.LoadLayout(p)
		if err != nil {
			log.Fatalf("load %s: %v", p, err)
		}
		layouts[p] = l
		return l
	}
	for _, spec := range images {
		ref, src, ok := strings.Cut(spec, "=")
		if !ok {
			log.Fatalf("-image %q: want REF=PATH[#NAME]", spec)
		}
		p, name, _ := strings.Cut(src, "#")
		d, err := reg.AddLayout(ref, load(p), name)
		if err != nil {
			log.Fatalf("-image %s: %v", spec, err)
		}
		log.Printf("serving %s = %s (%s)", ref, d.Digest, d.MediaType)
	}
	for _, p := range archives {
		l := load(p)
		n := 0
		for _, d := range l.Index.Manifests {
			ref := d.Annotations[registry.AnnotationImageName]
			if ref == "" {
				ref = d.Annotations[registry.AnnotationRefName]
			}
			if _, err := registry.ParseReference(ref); err != nil || !strings.Contains(ref, "/") {
				continue
			}
			if err := reg.AddImage(ref, l, d); err != nil {
				log.Fatalf("-archive %s: %v", p, err)
			}
			log.Printf("serving %s = %s (%s)", ref, d.Digest, d.MediaType)
			n++
		}
		if n == 0 {
			log.Fatalf("-archive %s: no entry with a full image name", p)
		}
	}
	if *httpAddr == "" && *httpsAddr == "" {
		log.Fatal("nothing to listen on: give -http and/or -https")
	}

	var servers []*http.Server
	var readyLines []string
	errc := make(chan error, 2)
	serve := func(kind, addr string, tlsConf *tls.Config) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("listen %s: %v", addr, err)
		}
		srv := &http.Server{Handler: reg, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		readyLines = append(readyLines, kind+" "+ln.Addr().String())
		log.Printf("%s listening on %s", kind, ln.Addr())
		go func() {
			if tlsConf != nil {
				errc <- srv.ServeTLS(ln, "", "")
			} else {
				errc <- srv.Serve(ln)
			}
		}()
	}
	if *httpAddr != "" {
		serve("http", *httpAddr, nil)
	}
	if *httpsAddr != "" {
		var names []string
		for _, n := range tlsNames {
			for _, s := range strings.Split(n, ",") {
				if s = strings.TrimSpace(s); s != "" {
					names = append(names, s)
				}
			}
		}
		if h, _, err := net.SplitHostPort(*httpsAddr); err == nil && h != "" {
			names = append(names, h)
		}
		caPEM, cert, err := registry.GenerateTLS(names)
		if err != nil {
			log.Fatalf("tls: %v", err)
		}
		if *caOut != "" {
			if err := os.WriteFile(*caOut, caPEM, 0o644); err != nil {
				log.Fatal(err)
			}
		}
		serve("https", *httpsAddr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(strings.Join(readyLines, "\n")+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sigc:
		log.Printf("%v: shutting down", s)
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "registry:", err)
			os.Exit(1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
}
