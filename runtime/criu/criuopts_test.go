// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
)

// fakeFileInfo is a file or directory for a fake rootfs stat.
type fakeFileInfo struct{ dir bool }

func (f fakeFileInfo) Name() string { return "x" }
func (f fakeFileInfo) Size() int64  { return 0 }
func (f fakeFileInfo) Mode() fs.FileMode {
	return map[bool]fs.FileMode{true: fs.ModeDir, false: 0}[f.dir]
}
func (f fakeFileInfo) ModTime() time.Time { return time.Time{} }
func (f fakeFileInfo) IsDir() bool        { return f.dir }
func (f fakeFileInfo) Sys() any           { return nil }

// fakeRootfs: /proc/acpi is a directory, /proc/kcore a file, the rest absent.
func fakeRootfs(p string) (os.FileInfo, error) {
	switch p {
	case "/proc/acpi":
		return fakeFileInfo{dir: true}, nil
	case "/proc/kcore":
		return fakeFileInfo{}, nil
	}
	return nil, os.ErrNotExist
}

func extMnts(o *rpc.CriuOpts) []string {
	var out []string
	for _, m := range o.ExtMnt {
		out = append(out, m.GetKey()+":"+m.GetVal())
	}
	return out
}

func TestBuildDumpOptions(t *testing.T) {
	st, err := ParseRuncState([]byte(sampleState))
	if err != nil {
		t.Fatal(err)
	}
	runcMounts := []string{
		"/etc/hosts:/etc/hosts", "/etc/resolv.conf:/etc/resolv.conf", // bind mounts
		"/proc/kcore:/dev/null",                      // masked file
		"/dev/null:/dev/null", "/dev/zero:/dev/zero", // devices
	}
	tmpfsMounts := []string{
		"/dev:rrc-tmpfs-dev", "/dev/shm:rrc-tmpfs-dev-shm", "/run:rrc-tmpfs-run",
		"/proc/acpi:rrc-tmpfs-proc-acpi",
	}
	tests := []struct {
		name       string
		opts       DumpOptions
		wantExtMnt []string
		wantCgMode *rpc.CriuCgMode
		wantConfig string // dumpConfigFile's path in CriuOpts and its content; "" for none
		wantErr    string
	}{
		{name: "runc-compatible", opts: DumpOptions{ImagesDir: "/img", LogLevel: 4}, wantExtMnt: runcMounts},
		{name: "fast", opts: func() DumpOptions { o := FastDumpOptions(); o.ImagesDir = "/img"; return o }(),
			wantExtMnt: append(slices.Clone(runcMounts), tmpfsMounts...), wantCgMode: rpc.CriuCgMode_IGNORE.Enum(),
			wantConfig: "file-validation=filesize\n"},
		{name: "relative images dir", opts: DumpOptions{ImagesDir: "img"}, wantErr: "not absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := BuildDumpOptions(st, tt.opts, fakeRootfs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// What every dump must have, whatever the options.
			if o.GetImagesDirFd() != -1 || o.GetImagesDir() != "/img" {
				t.Errorf("images dir = %d %q", o.GetImagesDirFd(), o.GetImagesDir())
			}
			if !o.GetLeaveRunning() || !o.GetTcpEstablished() || !o.GetManageCgroups() || !o.GetOrphanPtsMaster() {
				t.Error("leave_running, tcp_established, manage_cgroups and orphan_pts_master must be set")
			}
			if o.GetNetworkLock() != rpc.CriuNetworkLockMethod_SKIP {
				t.Errorf("network lock = %v, want SKIP", o.GetNetworkLock())
			}
			if o.GetFreezeCgroup() != "/sys/fs/cgroup/freezer/rrcrt-a/r0" {
				t.Errorf("freeze cgroup = %q", o.GetFreezeCgroup())
			}
			if !o.GetNotifyScripts() {
				t.Error("notify scripts off: no pre-dump notification to freeze on")
			}
			if o.GetPid() != 14882 || o.GetRoot() != st.Config.Rootfs || o.GetLogFile() != "dump.log" {
				t.Errorf("pid/root/log = %d %q %q", o.GetPid(), o.GetRoot(), o.GetLogFile())
			}
			if len(o.External) != 0 {
				t.Errorf("external = %v; a --net-host container has no namespace joined by path", o.External)
			}
			if got := extMnts(o); !slices.Equal(got, tt.wantExtMnt) {
				t.Errorf("ext mounts\n got %v\nwant %v", got, tt.wantExtMnt)
			}
			if (o.ManageCgroupsMode == nil) != (tt.wantCgMode == nil) || (tt.wantCgMode != nil && o.GetManageCgroupsMode() != *tt.wantCgMode) {
				t.Errorf("cgroup mode = %v, want %v", o.ManageCgroupsMode, tt.wantCgMode)
			}
			wantPath := ""
			if tt.wantConfig != "" {
				wantPath = "/img/" + dumpConfigFile
			}
			if o.GetConfigFile() != wantPath || dumpConfig(tt.opts) != tt.wantConfig {
				t.Errorf("config file %q with %q, want %q with %q", o.GetConfigFile(), dumpConfig(tt.opts), wantPath, tt.wantConfig)
			}
			if tt.name == "fast" && o.GetLogLevel() > 1 {
				t.Errorf("log level %d: above 1 CRIU's log lines cost milliseconds of the pause", o.GetLogLevel())
			}
		})
	}
}

func TestBuildDumpOptionsJoinedNetns(t *testing.T) {
	st, err := ParseRuncState([]byte(sampleState))
	if err != nil {
		t.Fatal(err)
	}
	st.Config.Namespaces = append(st.Config.Namespaces, RuncNamespace{Type: "NEWNET", Path: "/proc/self/ns/net"})
	o, err := BuildDumpOptions(st, DumpOptions{ImagesDir: "/img"}, fakeRootfs)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.External) != 1 || !strings.HasPrefix(o.External[0], "net[") || !strings.HasSuffix(o.External[0], "]:extRootNetNS") {
		t.Errorf("external = %v, want net[<inode>]:extRootNetNS as runc passes", o.External)
	}
	// With CRIU in the container's namespace it is CRIU's own: not external.
	o, err = BuildDumpOptions(st, DumpOptions{ImagesDir: "/img", InNetNS: true}, fakeRootfs)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.External) != 0 {
		t.Errorf("external = %v with CRIU in the container's netns, want none", o.External)
	}
}

// A cgroup mount (CRI's specs have one) is, on cgroup v1 without a cgroup
// namespace, a bind mount per hierarchy: external, as runc declares them.
func TestBuildDumpOptionsCgroupMount(t *testing.T) {
	st, err := ParseRuncState([]byte(sampleState))
	if err != nil {
		t.Fatal(err)
	}
	st.Config.Mounts = append(st.Config.Mounts, RuncMount{Source: "cgroup", Destination: "/sys/fs/cgroup", Device: "cgroup"})
	old := cgroupV1Hierarchies
	defer func() { cgroupV1Hierarchies = old }()
	cgroupV1Hierarchies = func() ([]string, error) { return []string{"cpu,cpuacct", "systemd"}, nil }
	o, err := BuildDumpOptions(st, DumpOptions{ImagesDir: "/img"}, fakeRootfs)
	if err != nil {
		t.Fatal(err)
	}
	got := extMnts(o)
	for _, want := range []string{"/sys/fs/cgroup/cpu,cpuacct:/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd"} {
		if !slices.Contains(got, want) {
			t.Errorf("ext mounts %v lack %s", got, want)
		}
	}
	// With a cgroup namespace runc mounts the hierarchies for real.
	st.Config.Namespaces = append(st.Config.Namespaces, RuncNamespace{Type: "NEWCGROUP"})
	if o, err = BuildDumpOptions(st, DumpOptions{ImagesDir: "/img"}, fakeRootfs); err != nil {
		t.Fatal(err)
	}
	for _, m := range extMnts(o) {
		if strings.HasPrefix(m, "/sys/fs/cgroup/") {
			t.Errorf("ext mount %s with a cgroup namespace", m)
		}
	}
}

func TestCRIUCommandInNamespaces(t *testing.T) {
	for _, tc := range []struct {
		c    CRIUCommand
		want []string
	}{
		{CRIUCommand{}, []string{"criu"}},
		{CRIUCommand{Argv: []string{"/opt/criu"}}, []string{"/opt/criu"}},
		{CRIUCommand{NetNS: "/run/netns/x"}, []string{"nsenter", "--net=/run/netns/x", "--", "criu"}},
		{CRIUCommand{UTSNS: "/proc/7/ns/uts", IPCNS: "/proc/7/ns/ipc", Argv: []string{"c"}},
			[]string{"nsenter", "--uts=/proc/7/ns/uts", "--ipc=/proc/7/ns/ipc", "--", "c"}},
		{CRIUCommand{NetNS: "/n", IPCNS: "/i"}, []string{"nsenter", "--net=/n", "--ipc=/i", "--", "criu"}},
	} {
		if got := tc.c.argv(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: argv %v, want %v", tc.c, got, tc.want)
		}
	}
}

func TestTmpfsKey(t *testing.T) {
	for in, want := range map[string]string{"/dev": "rrc-tmpfs-dev", "/dev/shm": "rrc-tmpfs-dev-shm", "/run/": "rrc-tmpfs-run"} {
		if got := TmpfsKey(in); got != want {
			t.Errorf("TmpfsKey(%q) = %q, want %q", in, got, want)
		}
	}
}
