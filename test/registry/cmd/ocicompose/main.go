// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command ocicompose derives test images from OCI image archives made by
// contrib/imagebuild:
//
//	ocicompose stack -o OUT.tar [-config-from N] [-name REF] IN.tar...
//	    one image whose layers are those of IN..., bottom first
//	ocicompose multiplatform -o OUT.tar [-name REF] -platform os/arch[/variant]... IN.tar
//	    an index: IN's image plus a small synthetic image per extra platform
//	ocicompose digest IN.tar
//	    print the digest of IN's top-level manifest or index
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/iorrc/rrc/test/registry"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ocicompose stack|multiplatform|digest [flags] ARCHIVE...")
	os.Exit(2)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "ocicompose:", err)
	os.Exit(1)
}

func load(paths []string) []*registry.Layout {
	var ls []*registry.Layout
	for _, p := range paths {
		l, err := registry.LoadLayout(p)
		if err != nil {
			fatal(err)
		}
		ls = append(ls, l)
	}
	return ls
}

func write(l *registry.Layout, out, name string) {
	if name != "" {
		if err := registry.SetName(l, name); err != nil {
			fatal(err)
		}
	}
	if err := l.WriteArchiveFile(out); err != nil {
		fatal(err)
	}
	fmt.Println(l.Index.Manifests[0].Digest)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	out := fs.String("o", "", "output OCI archive")
	name := fs.String("name", "", "image name to annotate in index.json")
	switch os.Args[1] {
	case "stack":
		configFrom := fs.Int("config-from", 0, "index of the input whose image config (cmd, env, ...) is kept")
		_ = fs.Parse(os.Args[2:])
		if *out == "" || fs.NArg() == 0 {
			usage()
		}
		l, err := registry.Stack(load(fs.Args()), *configFrom)
		if err != nil {
			fatal(err)
		}
		write(l, *out, *name)
	case "multiplatform":
		var plats []string
		fs.Func("platform", "extra platform os/arch[/variant] (repeatable, or comma-separated)", func(s string) error {
			plats = append(plats, strings.Split(s, ",")...)
			return nil
		})
		_ = fs.Parse(os.Args[2:])
		if *out == "" || fs.NArg() != 1 {
			usage()
		}
		var ps []registry.Platform
		for _, s := range plats {
			p, err := registry.ParsePlatform(s)
			if err != nil {
				fatal(err)
			}
			ps = append(ps, p)
		}
		l, err := registry.MultiPlatform(load(fs.Args())[0], ps)
		if err != nil {
			fatal(err)
		}
		write(l, *out, *name)
	case "digest":
		_ = fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			usage()
		}
		d, err := load(fs.Args())[0].Lookup("")
		if err != nil {
			fatal(err)
		}
		fmt.Println(d.Digest)
	default:
		usage()
	}
}
