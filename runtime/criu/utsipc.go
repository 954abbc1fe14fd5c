// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// CRIU dumps every namespace of the container that differs from its own,
// each from a child it forks: the UTS and IPC namespaces cost pause time
// that way (docs/CHECKPOINT.md), for a host name and a few IPC limits that
// do not change. The Checkpointer starts CRIU inside the container's UTS and IPC
// namespaces instead (CRIUCommand.UTSNS/IPCNS), and Restore makes new ones
// when an image has none of its own (the host name comes from the OCI spec).
//
// The IPC namespace also holds System V objects (shared memory segments,
// semaphores, message queues), which only its dump carries. It is left to
// CRIU whenever it holds any: when the Checkpointer starts, and from the
// first checkpoint that finds one while the container is frozen (that
// checkpoint fails; the next dumps the namespace).

// sysvIPC reads the System V objects of one IPC namespace: the files of
// /proc/sysvipc show the namespace of whoever opened them, for as long as
// they stay open.
type sysvIPC struct {
	files []*os.File
	buf   []byte
}

// openSysVIPC opens /proc/sysvipc/{shm,sem,msg} inside the IPC namespace ns
// (a path), from a thread of ours that enters it and comes back.
func openSysVIPC(ns string) (*sysvIPC, error) {
	type result struct {
		s   *sysvIPC
		err error
	}
	done := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		s, back, err := openSysVIPCIn(ns)
		done <- result{s, err}
		if back {
			goruntime.UnlockOSThread()
		} // else this thread ends with the goroutine, in the wrong namespace
	}()
	r := <-done
	if r.err != nil {
		return nil, fmt.Errorf("watch %s for System V IPC objects: %w", ns, r.err)
	}
	return r.s, nil
}

// openSysVIPCIn is openSysVIPC on a locked thread; back says whether the
// thread is in its own IPC namespace again.
func openSysVIPCIn(ns string) (s *sysvIPC, back bool, err error) {
	self, err := os.Open("/proc/thread-self/ns/ipc")
	if err != nil {
		return nil, true, err
	}
	defer self.Close()
	target, err := os.Open(ns)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWIPC); err != nil {
		return nil, true, fmt.Errorf("enter: %w", err)
	}
	s = &sysvIPC{buf: make([]byte, 4096)}
	for _, name := range []string{"shm", "sem", "msg"} {
		f, ferr := os.Open("/proc/sysvipc/" + name)
		if ferr != nil {
			err = ferr
			break
		}
		s.files = append(s.files, f)
	}
	if serr := unix.Setns(int(self.Fd()), unix.CLONE_NEWIPC); serr != nil {
		s.close()
		return nil, false, fmt.Errorf("leave: %w", serr)
	}
	if err != nil {
		s.close()
		return nil, true, err
	}
	return s, true, nil
}

// objects returns the kind of the first System V object it finds ("shm",
// "sem" or "msg"), or "" if there is none. Each file is one header line and
// a line per object.
func (s *sysvIPC) objects() (string, error) {
	for _, f := range s.files {
		n, err := f.ReadAt(s.buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read %s: %w", f.Name(), err)
		}
		if bytes.Count(s.buf[:n], []byte{'\n'}) > 1 {
			return filepath.Base(f.Name()), nil
		}
	}
	return "", nil
}

func (s *sysvIPC) close() {
	if s == nil {
		return
	}
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
}

// sameNS checks that the namespace files a and b are one namespace.
func sameNS(a, b string) error {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return err
	}
	if err := unix.Stat(b, &sb); err != nil {
		return err
	}
	if sa.Dev != sb.Dev || sa.Ino != sb.Ino {
		return fmt.Errorf("%s is not %s", a, b)
	}
	return nil
}

// shareUTSIPC starts CRIU in the container's UTS and IPC namespaces where
// they are not ours (those CRIU would dump), except an IPC namespace that
// holds System V objects or that we cannot watch for them.
func (c *Checkpointer) shareUTSIPC() {
	pid := c.state.InitPid
	uts, ipc := fmt.Sprintf("/proc/%d/ns/uts", pid), fmt.Sprintf("/proc/%d/ns/ipc", pid)
	if sameNS("/proc/self/ns/uts", uts) != nil {
		c.cfg.CRIU.UTSNS = uts
	}
	if sameNS("/proc/self/ns/ipc", ipc) == nil {
		return
	}
	s, err := openSysVIPC(ipc)
	var kind string
	if err == nil {
		kind, err = s.objects()
	}
	switch {
	case err != nil:
		c.log.Warn("CRIU dumps the container's IPC namespace: cannot watch it for System V objects", "err", err)
	case kind != "":
		c.log.Info("CRIU dumps the container's IPC namespace: it holds System V objects", "kind", kind)
	default:
		c.cfg.CRIU.IPCNS, c.sysv = ipc, s
		return
	}
	s.close()
}

// checkSysVIPC runs while the container is frozen: a System V object in
// the IPC namespace CRIU does not dump fails the checkpoint.
func (c *Checkpointer) checkSysVIPC() error {
	if c.sysv == nil {
		return nil
	}
	kind, err := c.sysv.objects()
	if err == nil && kind == "" {
		return nil
	}
	c.ipcToDump = true
	if err != nil {
		return fmt.Errorf("watching the IPC namespace for System V objects: %w; the next checkpoint dumps it", err)
	}
	return fmt.Errorf("IPC namespace of the container gained System V objects (%s), which only its dump carries; the next checkpoint dumps it", kind)
}

// dumpIPCNamespace replaces the CRIU service with one outside the
// container's IPC namespace, which CRIU then dumps. If that fails, ipcToDump
// stays set and the next checkpoint tries again before it dumps anything.
func (c *Checkpointer) dumpIPCNamespace() error {
	cmd := c.cfg.CRIU
	cmd.IPCNS = ""
	svc, err := NewCRIUService(cmd, c.log)
	if err != nil {
		return fmt.Errorf("restart CRIU outside the IPC namespace: %w", err)
	}
	c.cancelPrepared() // asked of the old service
	old := c.criu
	c.cfg.CRIU, c.criu = cmd, svc
	if err := old.Close(); err != nil {
		c.log.Debug("close CRIU service", "err", err)
	}
	c.sysv.close()
	c.sysv, c.ipcToDump = nil, false
	c.log.Info("CRIU dumps the container's IPC namespace from now on")
	return nil
}

// restoreNamespaces makes the UTS and IPC namespaces the container had and
// its images do not carry (dumped by a CRIU inside them, see above): for
// each of them that the bundle's spec asks for without a path, a new
// namespace bound to a file in work, set as the spec's path, so that runc
// has CRIU join it. release unmounts them once the restored tasks hold them.
type restoreNamespaces struct {
	files []string
}

func prepareRestoreNamespaces(bundle, images, work string) (*restoreNamespaces, error) {
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("bundle spec: %w", err)
	}
	linux, _ := spec["linux"].(map[string]any)
	nss, _ := linux["namespaces"].([]any)
	image := map[string]string{"uts": "utsns-*.img", "ipc": "ipcns-var-*.img"}
	r := &restoreNamespaces{}
	files := map[string]string{}
	for _, v := range nss {
		ns, _ := v.(map[string]any)
		typ, _ := ns["type"].(string)
		pattern, ok := image[typ]
		if p, _ := ns["path"].(string); !ok || p != "" {
			continue
		}
		if m, _ := filepath.Glob(filepath.Join(images, pattern)); len(m) > 0 {
			continue // CRIU restores it
		}
		file := filepath.Join(work, "ns-"+typ)
		_ = unix.Unmount(file, unix.MNT_DETACH) // a stale one, after a crash; usually none (EINVAL)
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			return nil, errors.Join(err, r.release())
		}
		r.files = append(r.files, file)
		files[typ] = file
		ns["path"] = file
	}
	if len(files) == 0 {
		return r, nil
	}
	host, _ := spec["hostname"].(string)
	domain, _ := spec["domainname"].(string)
	if err := bindNewNamespaces(files, host, domain); err != nil {
		return nil, errors.Join(fmt.Errorf("make the UTS/IPC namespaces the images do not carry: %w", err), r.release())
	}
	if b, err = json.Marshal(spec); err == nil {
		err = os.WriteFile(path, b, 0o600)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("bundle spec: %w", err), r.release())
	}
	return r, nil
}

// bindNewNamespaces makes new namespaces of the types files names ("uts",
// "ipc") on a thread of its own, sets the host and domain names in the UTS
// one, binds each namespace to its file and puts the thread back into the
// namespaces it had. It runs in the shim rather than in an unshare and a
// shell: two program starts are most of the cost on the failover path.
func bindNewNamespaces(files map[string]string, host, domain string) error {
	var clone int
	for typ := range files {
		f := newNSFlag(typ)
		if f == 0 {
			return fmt.Errorf("no new %s namespace is made here", typ)
		}
		clone |= f
	}
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		back, err := inNewNamespaces(clone, func() error {
			if _, uts := files["uts"]; uts {
				if err := setNames(host, domain); err != nil {
					return err
				}
			}
			for typ, file := range files {
				src := fmt.Sprintf("/proc/thread-self/ns/%s", typ)
				if err := unix.Mount(src, file, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("bind the new %s namespace to %s: %w", typ, file, err)
				}
			}
			return nil
		})
		done <- err
		if back {
			goruntime.UnlockOSThread()
		} // else this thread ends with the goroutine, in the new namespaces
	}()
	return <-done
}

// inNewNamespaces runs f on the calling (locked) thread in new namespaces
// of the clone flags, UTS and IPC only, then puts the thread back into its
// own; back says whether it is there again.
func inNewNamespaces(clone int, f func() error) (back bool, err error) {
	var own []*os.File
	defer func() {
		for _, o := range own {
			o.Close()
		}
	}()
	for _, typ := range []string{"uts", "ipc"} {
		if clone&newNSFlag(typ) != 0 {
			o, err := os.Open("/proc/thread-self/ns/" + typ)
			if err != nil {
				return true, fmt.Errorf("open the thread's %s namespace: %w", typ, err)
			}
			own = append(own, o)
		}
	}
	if err := unix.Unshare(clone); err != nil {
		return true, fmt.Errorf("unshare: %w", err)
	}
	err = f()
	for _, o := range own {
		if serr := unix.Setns(int(o.Fd()), 0); serr != nil {
			return false, errors.Join(err, fmt.Errorf("back into the thread's namespace %s: %w", o.Name(), serr))
		}
	}
	return true, err
}

// newNSFlag is the clone flag of a namespace type bindNewNamespaces makes,
// 0 for the others.
func newNSFlag(typ string) int {
	switch typ {
	case "uts":
		return unix.CLONE_NEWUTS
	case "ipc":
		return unix.CLONE_NEWIPC
	}
	return 0
}

// setNames sets the host and domain names of the calling thread's UTS
// namespace; empty ones keep what the namespace was made with.
func setNames(host, domain string) error {
	if host != "" {
		if err := unix.Sethostname([]byte(host)); err != nil {
			return fmt.Errorf("host name %q: %w", host, err)
		}
	}
	if domain != "" {
		if err := unix.Setdomainname([]byte(domain)); err != nil {
			return fmt.Errorf("domain name %q: %w", domain, err)
		}
	}
	return nil
}

func (r *restoreNamespaces) release() error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, f := range r.files {
		if err := unix.Unmount(f, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", f, err))
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	r.files = nil
	return errors.Join(errs...)
}
