// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	skopts "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-opts"
	tcpstream "github.com/checkpoint-restore/go-criu/v7/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/test/prereq"
)

// TestTCPMatchesCRIU: a program holds three TCP connections whose receive
// queues hold bytes it never read and whose send queues hold megabytes the
// peer never read; stopped, each connection is captured through a
// duplicate of its socket, and CRIU's dump of the same stopped state must
// hold the same entry and the same queue bytes (the TCP timestamp, a clock,
// may only have moved on).
func TestTCPMatchesCRIU(t *testing.T) {
	prereq.Root(t, "pidfd_getfd, TCP repair, cgroups and CRIU")
	prereq.Commands(t, "criu")
	cg := freezerCgroup(t)
	cmd, out := startWorkload(t, cg, "-listen", "127.0.0.1:0")
	for i, c := range dialWorkload(t, out, 3) {
		if _, err := c.Write(bytes.Repeat([]byte{byte('a' + i)}, 1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // everything sent is acknowledged, the windows shut
	pid := cmd.Process.Pid

	setFreezer(t, cg, "FROZEN")
	got, opts := captureSockets(t, pid)
	dir := filepath.Join(t.TempDir(), "criu")
	criuDump(t, pid, dir, "--freeze-cgroup", cg, "--tcp-established", "--network-lock", "skip")
	setFreezer(t, cg, "THAWED")
	if len(got) != 3 {
		t.Fatalf("%d connections captured, want 3", len(got))
	}
	criuOpts := criuSocketOptions(t, dir)
	for ino, o := range opts {
		w := criuOpts[ino]
		if !proto.Equal(o.sock, w.sock) {
			t.Errorf("socket %d: options\n got %v\nwant %v", ino, o.sock, w.sock)
		}
		if !bytes.Equal(o.tcp, w.tcp) || len(o.tcp) == 0 {
			t.Errorf("socket %d: TCP options %x, CRIU's %x (Go's sockets have some set)", ino, o.tcp, w.tcp)
		}
	}
	for ino, s := range got {
		want, recvq, sendq := readTCPStream(t, filepath.Join(dir, fmt.Sprintf("tcp-stream-%x.img", ino)))
		if w, g := want.GetTimestamp(), s.Entry.GetTimestamp(); g > w || w-g > 5000 {
			t.Errorf("socket %d: TCP timestamp %d, CRIU's %d", ino, g, w)
		}
		e := proto.Clone(s.Entry).(*tcpstream.TcpStreamEntry)
		e.Timestamp = want.Timestamp
		if want.GetUnsqLen() == 0 && e.GetUnsqLen() > 0 {
			// An ACK (to the workload's zero-window probe) processed while
			// the send queue was selected in repair mode: the kernel then
			// takes the unsent data as sent (tcp_write_xmit's repair path).
			// CRIU's capture, after ours, found it so.
			t.Logf("socket %d: %d bytes taken as sent during the capture", ino, e.GetUnsqLen())
			e.UnsqLen = want.UnsqLen
		}
		if !proto.Equal(e, want) {
			t.Errorf("socket %d:\n got %v\nwant %v", ino, e, want)
		}
		s.Entry = e
		if img, err := s.Image(); err != nil || !bytes.Equal(img, mustRead(t, filepath.Join(dir, fmt.Sprintf("tcp-stream-%x.img", ino)))) {
			t.Errorf("socket %d: the image differs from CRIU's file (%v)", ino, err)
		}
		if !bytes.Equal(s.RecvQ, recvq) || !bytes.Equal(s.SendQ, sendq) {
			t.Errorf("socket %d: queues of %d and %d bytes, CRIU's %d and %d", ino, len(s.RecvQ), len(s.SendQ), len(recvq), len(sendq))
		}
		if len(s.RecvQ) < 1000 || len(s.SendQ) == 0 {
			t.Errorf("socket %d: queues of %d and %d bytes: the test meant both to hold data", ino, len(s.RecvQ), len(s.SendQ))
		}
		t.Logf("socket %d: receive queue %d bytes, send queue %d (%d unsent)", ino, len(s.RecvQ), len(s.SendQ), s.Entry.GetUnsqLen())
	}
}

// captureSockets captures every established TCP socket of pid, by inode.
func captureSockets(t *testing.T, pid int) (map[uint64]TCPStream, map[uint64]socketOpts) {
	t.Helper()
	ds, err := OpenDescriptors(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDescriptors(ds)
	got, opts := map[uint64]TCPStream{}, map[uint64]socketOpts{}
	for _, d := range ds {
		var st unix.Stat_t
		protocol, perr := unix.GetsockoptInt(d.Dup, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		if unix.Fstat(d.Dup, &st) != nil || perr != nil || protocol != unix.IPPROTO_TCP {
			continue
		}
		if info, err := unix.GetsockoptTCPInfo(d.Dup, unix.SOL_TCP, unix.TCP_INFO); err != nil || info.State != tcpEstablished {
			continue
		}
		s, err := CaptureTCP(d.Dup)
		if err != nil {
			t.Fatalf("socket %d: %v", st.Ino, err)
		}
		got[st.Ino] = s
		var o socketOpts
		if o.sock, err = SocketOptions(d.Dup, unix.AF_INET); err != nil {
			t.Fatalf("socket %d: %v", st.Ino, err)
		}
		if o.tcp, err = TCPOptions(d.Dup); err != nil {
			t.Fatalf("socket %d: %v", st.Ino, err)
		}
		opts[st.Ino] = o
	}
	return got, opts
}

// socketOpts are a socket's options and its TCP options (encoded).
type socketOpts struct {
	sock *skopts.SkOptsEntry
	tcp  []byte
}

// criuSocketOptions returns the options of each inet socket in CRIU's
// files.img, by inode; the TCP options are field 20 of the entry.
func criuSocketOptions(t *testing.T, dir string) map[uint64]socketOpts {
	t.Helper()
	r, err := criuimage.DecodeRecords(mustRead(t, filepath.Join(dir, "files.img")), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]socketOpts{}
	for _, rec := range r.Entries {
		var fe fdinfo.FileEntry
		if err := proto.Unmarshal(rec, &fe); err != nil {
			t.Fatal(err)
		}
		isk := fe.GetIsk()
		if isk == nil {
			continue
		}
		o := socketOpts{sock: isk.GetOpts()}
		for b := []byte(isk.ProtoReflect().GetUnknown()); len(b) > 0; {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				t.Fatal(protowire.ParseError(n))
			}
			b = b[n:]
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				t.Fatal(protowire.ParseError(m))
			}
			if num == 20 && typ == protowire.BytesType {
				v, _ := protowire.ConsumeBytes(b)
				o.tcp = v
			}
			b = b[m:]
		}
		out[uint64(isk.GetIno())] = o
	}
	return out
}

// readTCPStream decodes a tcp-stream image CRIU wrote.
func readTCPStream(t *testing.T, path string) (*tcpstream.TcpStreamEntry, []byte, []byte) {
	t.Helper()
	b := mustRead(t, path)
	if len(b) < 12 || binary.LittleEndian.Uint32(b[4:]) != tcpStreamMagic {
		t.Fatalf("%s: not a tcp-stream image", path)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	var e tcpstream.TcpStreamEntry
	if err := proto.Unmarshal(b[12:12+n], &e); err != nil {
		t.Fatal(err)
	}
	rest := b[12+n:]
	in := e.GetInqLen()
	return &e, rest[:in], rest[in:]
}
