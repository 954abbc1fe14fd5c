// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/test/prereq"
)

// TestPatchedFilesMatchCRIU: after a first CRIU dump, the program's three
// connections have options changed (a receive buffer, keep-alive off,
// Nagle on again); the files image of the first dump patched with the
// options read now must hold, for each connection, CRIU's entry of a
// second dump of the same frozen state, field for field.
func TestPatchedFilesMatchCRIU(t *testing.T) {
	prereq.Root(t, "pidfd_getfd, cgroups and CRIU")
	prereq.Commands(t, "criu")
	cg := freezerCgroup(t)
	cmd, out := startWorkload(t, cg, "-listen", "127.0.0.1:0", "-write", "0")
	dialWorkload(t, out, 3)
	time.Sleep(200 * time.Millisecond)
	pid := cmd.Process.Pid
	tmp := t.TempDir()
	before, after := filepath.Join(tmp, "before"), filepath.Join(tmp, "after")
	tcpArgs := []string{"--tcp-established", "--network-lock", "skip"}
	criuDump(t, pid, before, tcpArgs...)

	// The program changes its options (through our duplicates: the same sockets).
	ds, err := OpenDescriptors(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDescriptors(ds)
	var conns []int
	for _, d := range ds {
		if info, err := unix.GetsockoptTCPInfo(d.Dup, unix.SOL_TCP, unix.TCP_INFO); err == nil && info.State == tcpEstablished {
			conns = append(conns, d.Dup)
		}
	}
	if len(conns) != 3 {
		t.Fatalf("%d connections, want 3", len(conns))
	}
	for i, set := range []struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_RCVBUF, 300000}, {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0}, {unix.SOL_TCP, unix.TCP_NODELAY, 0},
	} {
		if err := unix.SetsockoptInt(conns[i], set.level, set.opt, set.v); err != nil {
			t.Fatal(err)
		}
	}

	setFreezer(t, cg, "FROZEN")
	socks := map[uint64]InetSocket{}
	for _, fd := range conns {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		o, err := SocketOptions(fd, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		tcp, err := TCPOptions(fd)
		if err != nil {
			t.Fatal(err)
		}
		socks[st.Ino] = InetSocket{Opts: o, TCPOpts: tcp}
	}
	criuDump(t, pid, after, append(tcpArgs, "--freeze-cgroup", cg)...)
	setFreezer(t, cg, "THAWED")

	patched, err := PatchInetSockets(mustRead(t, filepath.Join(before, "files.img")), socks)
	if err != nil {
		t.Fatal(err)
	}
	got, want, old := connEntries(t, patched), connEntries(t, mustRead(t, filepath.Join(after, "files.img"))), connEntries(t, mustRead(t, filepath.Join(before, "files.img")))
	if len(want) != 3 {
		t.Fatalf("CRIU's second dump has %d connections", len(want))
	}
	changed := 0
	for ino, w := range want {
		if !proto.Equal(got[ino], w) {
			t.Errorf("socket %d:\n got %v\nwant %v", ino, got[ino], w)
		}
		if !proto.Equal(old[ino], w) {
			changed++
		}
	}
	if changed != 3 {
		t.Errorf("%d of 3 entries changed between CRIU's dumps: the test meant to change all", changed)
	}

	delete(socks, firstKey(socks))
	if _, err := PatchInetSockets(mustRead(t, filepath.Join(before, "files.img")), socks); !errors.Is(err, ErrChanged) {
		t.Errorf("a connection of the image missing now: %v, want ErrChanged", err)
	}
}

// connEntries returns the connected TCP sockets' entries of a files image.
func connEntries(t *testing.T, img []byte) map[uint64]*fdinfo.FileEntry {
	t.Helper()
	r, err := criuimage.DecodeRecords(img, filesMagic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]*fdinfo.FileEntry{}
	for _, rec := range r.Entries {
		fe := &fdinfo.FileEntry{}
		if err := proto.Unmarshal(rec, fe); err != nil {
			t.Fatal(err)
		}
		if isk := fe.GetIsk(); isk != nil && isk.GetDstPort() != 0 {
			out[uint64(isk.GetIno())] = fe
		}
	}
	return out
}

func firstKey(m map[uint64]InetSocket) uint64 {
	for k := range m {
		return k
	}
	return 0
}

// TestPatchedEpollMatchesCRIU: the program keeps changing how its epoll
// instance watches a pipe; the files image of a first CRIU dump, patched
// with the registrations read from /proc while frozen, must hold the epoll
// entries of CRIU's dump of the same frozen state.
func TestPatchedEpollMatchesCRIU(t *testing.T) {
	prereq.Root(t, "cgroups and CRIU")
	prereq.Commands(t, "criu")
	cg := freezerCgroup(t)
	cmd, _ := startWorkload(t, cg, "-epoll")
	pid := cmd.Process.Pid
	tmp := t.TempDir()
	before, after := filepath.Join(tmp, "before"), filepath.Join(tmp, "after")
	criuDump(t, pid, before)
	time.Sleep(50 * time.Millisecond) // the registration changes meanwhile

	setFreezer(t, cg, "FROZEN")
	fdinfoImgs, err := filepath.Glob(filepath.Join(before, "fdinfo-*.img"))
	if err != nil || len(fdinfoImgs) != 1 {
		t.Fatalf("fdinfo images of the first dump: %v %v", fdinfoImgs, err)
	}
	patched, err := PatchEpolls(mustRead(t, filepath.Join(before, "files.img")), mustRead(t, fdinfoImgs[0]), func(fd int) ([]EpollTarget, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			return nil, err
		}
		fi, err := ParseFDInfo(b)
		return fi.Epoll, err
	})
	criuDump(t, pid, after, "--freeze-cgroup", cg)
	setFreezer(t, cg, "THAWED")
	if err != nil {
		t.Fatal(err)
	}
	got, want, old := epollEntries(t, patched), epollEntries(t, mustRead(t, filepath.Join(after, "files.img"))), epollEntries(t, mustRead(t, filepath.Join(before, "files.img")))
	if len(want) == 0 {
		t.Fatal("no epoll instance in CRIU's dump")
	}
	changed := 0
	for id, w := range want {
		if !proto.Equal(got[id], w) {
			t.Errorf("epoll %d:\n got %v\nwant %v", id, got[id], w)
		}
		if !proto.Equal(old[id], w) {
			changed++
		}
	}
	if changed == 0 {
		t.Errorf("no epoll entry changed between CRIU's dumps: the test meant one to")
	}
}

// epollEntries returns the epoll instances' entries of a files image, by id.
func epollEntries(t *testing.T, img []byte) map[uint32]*fdinfo.FileEntry {
	t.Helper()
	r, err := criuimage.DecodeRecords(img, filesMagic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]*fdinfo.FileEntry{}
	for _, rec := range r.Entries {
		fe := &fdinfo.FileEntry{}
		if err := proto.Unmarshal(rec, fe); err != nil {
			t.Fatal(err)
		}
		if fe.GetEpfd() != nil {
			out[fe.GetId()] = fe
		}
	}
	return out
}

// TestPatchedRegFilesMatchCRIU: the program keeps writing to a file; the
// files image of a first CRIU dump, patched with the descriptor's position,
// flags and size read while frozen, must hold the file's entry of CRIU's
// dump of the same frozen state.
func TestPatchedRegFilesMatchCRIU(t *testing.T) {
	prereq.Root(t, "cgroups and CRIU")
	prereq.Commands(t, "criu")
	cg := freezerCgroup(t)
	tmp := t.TempDir()
	cmd, _ := startWorkload(t, cg, "-file", filepath.Join(tmp, "written"))
	pid := cmd.Process.Pid
	before, after := filepath.Join(tmp, "before"), filepath.Join(tmp, "after")
	criuDump(t, pid, before)
	time.Sleep(50 * time.Millisecond) // it writes on

	setFreezer(t, cg, "FROZEN")
	fdinfoImgs, err := filepath.Glob(filepath.Join(before, "fdinfo-*.img"))
	if err != nil || len(fdinfoImgs) != 1 {
		t.Fatalf("fdinfo images of the first dump: %v %v", fdinfoImgs, err)
	}
	patched, err := PatchRegFiles(mustRead(t, filepath.Join(before, "files.img")), mustRead(t, fdinfoImgs[0]), func(fd int) (OpenFile, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			return OpenFile{}, err
		}
		fi, err := ParseFDInfo(b)
		if err != nil {
			return OpenFile{}, err
		}
		st, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		if err != nil {
			return OpenFile{}, err
		}
		return OpenFile{Pos: fi.Pos, Flags: fi.Flags, Size: st.Size()}, nil
	})
	criuDump(t, pid, after, "--freeze-cgroup", cg)
	setFreezer(t, cg, "THAWED")
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(tmp, "written")
	got, want, old := regEntry(t, patched, name), regEntry(t, mustRead(t, filepath.Join(after, "files.img")), name), regEntry(t, mustRead(t, filepath.Join(before, "files.img")), name)
	if !proto.Equal(got, want) {
		t.Errorf("file entry:\n got %v\nwant %v", got, want)
	}
	if proto.Equal(old, want) || want.GetReg().GetPos() == 0 {
		t.Errorf("the file's entry did not change between CRIU's dumps (position %d): the test meant it to", want.GetReg().GetPos())
	}
}

// regEntry returns the files image entry of the open file name.
func regEntry(t *testing.T, img []byte, name string) *fdinfo.FileEntry {
	t.Helper()
	r, err := criuimage.DecodeRecords(img, filesMagic)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range r.Entries {
		fe := &fdinfo.FileEntry{}
		if err := proto.Unmarshal(rec, fe); err != nil {
			t.Fatal(err)
		}
		if fe.GetReg().GetName() == name {
			return fe
		}
	}
	t.Fatalf("no entry for %s", name)
	return nil
}
