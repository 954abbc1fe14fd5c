// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command imagebuild packs host files into a single-layer OCI image archive
// that `ctr images import` accepts. No registry is needed.
//
//	go run ./contrib/imagebuild -ref rrc.local/redis:7 -o /path/out.tar \
//	    [-entrypoint /usr/bin/redis-server] [-cmd arg,arg] [-env K=V]... \
//	    [-workdir /] [-busybox] [FILE[:DEST]]...
//
// ELF executables get their dynamic loader and shared libraries added. With
// -busybox, the static /bin/busybox and a /bin/APPLET symlink per applet are
// added. Every image has a minimal skeleton (/proc /sys /dev /etc /tmp /run
// /var, /etc/passwd, /etc/group). Output is deterministic.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/iorrc/rrc/contrib/imagebuild/oci"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// splitArgs splits a comma-separated list, keeping empty elements
// ("--save,," gives "--save", ""). An empty value gives no element.
func splitArgs(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// parseFileArg splits FILE[:DEST]. DEST defaults to FILE's absolute path.
func parseFileArg(a string) (src, dest string, err error) {
	src, dest, _ = strings.Cut(a, ":")
	if src == "" {
		return "", "", fmt.Errorf("bad file argument %q", a)
	}
	if dest == "" {
		abs, err := filepath.Abs(src)
		if err != nil {
			return "", "", err
		}
		dest = abs
	}
	if !strings.HasPrefix(dest, "/") {
		return "", "", fmt.Errorf("bad file argument %q: DEST must be absolute", a)
	}
	return src, dest, nil
}

// busyboxApplets runs `BIN --list`.
func busyboxApplets(bin string) ([]string, error) {
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	var applets []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if a := strings.TrimSpace(sc.Text()); a != "" {
			applets = append(applets, a)
		}
	}
	return applets, sc.Err()
}

func main() {
	var (
		ref        = flag.String("ref", "", "image reference, e.g. rrc.local/redis:7 (required)")
		out        = flag.String("o", "", "output OCI archive (required)")
		entrypoint = flag.String("entrypoint", "", "entrypoint, comma-separated")
		workdir    = flag.String("workdir", "/", "working directory")
		user       = flag.String("user", "", "user (default root)")
		busybox    = flag.Bool("busybox", false, "add static busybox and its applet links under /bin")
		busyboxBin = flag.String("busybox-bin", "/bin/busybox", "busybox binary used by -busybox")
		verbose    = flag.Bool("v", false, "list what is added")
		cmds, envs listFlag
		labels     listFlag
	)
	flag.Var(&cmds, "cmd", "cmd arguments, comma-separated (empty elements kept); repeatable, appends")
	flag.Var(&envs, "env", "environment K=V; repeatable")
	flag.Var(&labels, "label", "image label K=V; repeatable")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: imagebuild -ref REF -o OUT.tar [flags] [FILE[:DEST]]...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *ref == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*ref, *out, *entrypoint, cmds, envs, labels, *workdir, *user, *busybox, *busyboxBin, *verbose, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		os.Exit(1)
	}
}

func run(ref, out, entrypoint string, cmds, envs, labels []string, workdir, user string, busybox bool, busyboxBin string, verbose bool, files []string) error {
	l := oci.NewLayer()
	if verbose {
		l.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	l.AddBase()
	if busybox {
		applets, err := busyboxApplets(busyboxBin)
		if err != nil {
			return err
		}
		if err := l.AddBusybox(busyboxBin, applets); err != nil {
			return err
		}
	}
	for _, f := range files {
		src, dest, err := parseFileArg(f)
		if err != nil {
			return err
		}
		if err := l.AddHostFile(src, dest); err != nil {
			return err
		}
	}
	img := oci.Image{Ref: ref, Entrypoint: splitArgs(entrypoint), Env: envs, WorkingDir: workdir, User: user}
	for _, c := range cmds {
		img.Cmd = append(img.Cmd, splitArgs(c)...)
	}
	for _, kv := range labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("bad label %q", kv)
		}
		if img.Labels == nil {
			img.Labels = map[string]string{}
		}
		img.Labels[k] = v
	}
	for _, kv := range envs {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("bad env %q (want K=V)", kv)
		}
	}
	layer, diffID, err := l.Compressed()
	if err != nil {
		return err
	}
	a, err := oci.NewArchive(img, layer, diffID)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(out); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := a.WriteTo(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	fmt.Printf("%s %s %s (layer %d bytes)\n", a.Ref, a.Manifest.Digest, out, layer.Size())
	return nil
}
