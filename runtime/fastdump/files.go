// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	skopts "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-opts"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/criuimage"
)

// filesMagic is FILES_MAGIC, the second word of files.img.
const filesMagic = 0x56303138

// tcpOptsField is the number of tcp_opts in CRIU 4.2's inet_sk_entry.
const tcpOptsField = 20

// InetSocket is what changes of a connected TCP socket's files.img entry.
type InetSocket struct {
	Opts    *skopts.SkOptsEntry
	TCPOpts []byte // TCPOptions
}

// PatchInetSockets returns files.img (whole file, of the previous
// checkpoint) with each TCP socket's options replaced by those in socks, by
// inode. The sockets must be the image's, all established with neither
// side shut down, or the error wraps ErrChanged: a socket opened or closed,
// or a connection closing, makes a full dump.
func PatchInetSockets(img []byte, socks map[uint64]InetSocket) ([]byte, error) {
	seen := 0
	out, err := patchEntries(img, func(fe *fdinfo.FileEntry) (bool, error) {
		isk := fe.GetIsk()
		if isk == nil || isk.GetProto() != unix.IPPROTO_TCP || isk.GetDstPort() == 0 {
			return false, nil // not a connected TCP socket: a listener is as it was
		}
		s, ok := socks[uint64(isk.GetIno())]
		if !ok {
			return false, fmt.Errorf("socket %d of the previous checkpoint is gone: %w", isk.GetIno(), ErrChanged)
		}
		if isk.GetState() != tcpEstablished || isk.Shutdown != nil {
			return false, fmt.Errorf("socket %d was not an open connection (state %d): %w", isk.GetIno(), isk.GetState(), ErrChanged)
		}
		seen++
		isk.Opts = s.Opts
		isk.ProtoReflect().SetUnknown(replaceField(isk.ProtoReflect().GetUnknown(), tcpOptsField, s.TCPOpts))
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if seen != len(socks) {
		return nil, fmt.Errorf("%d connections, %d in the previous checkpoint: %w", len(socks), seen, ErrChanged)
	}
	return out, nil
}

// replaceField returns the unknown fields b with field num (bytes) set to
// v: the occurrences of num dropped, one appended.
func replaceField(b []byte, num protowire.Number, v []byte) []byte {
	var out []byte
	for len(b) > 0 {
		n, typ, tl := protowire.ConsumeTag(b)
		if tl < 0 {
			break // not ours to judge: kept as it was
		}
		m := protowire.ConsumeFieldValue(n, typ, b[tl:])
		if m < 0 {
			break
		}
		if n != num {
			out = append(out, b[:tl+m]...)
		}
		b = b[tl+m:]
	}
	out = append(out, b...)
	out = protowire.AppendTag(out, num, protowire.BytesType)
	return protowire.AppendBytes(out, v)
}

// fdinfoMagic is FDINFO_MAGIC, the second word of fdinfo-<n>.img.
const fdinfoMagic = 0x56213732

// OpenFile is what changes of an open regular file's files.img entry: its
// position, its flags (O_CLOEXEC is not kept, as CRIU does not keep it) and
// its size, which the restore checks when CRIU recorded it.
type OpenFile struct {
	Pos   int64
	Flags uint32
	Size  int64
}

// PatchRegFiles returns files.img (whole file, of the previous checkpoint)
// with each regular file the process has open (not only mapped) as it is
// now: fdinfoImg is the process's fdinfo-<n>.img of the same checkpoint,
// state reads a descriptor's position, flags and size now.
func PatchRegFiles(filesImg, fdinfoImg []byte, state func(fd int) (OpenFile, error)) ([]byte, error) {
	regFD, err := descriptorsOf(fdinfoImg, fdinfo.FdTypes_REG)
	if err != nil {
		return nil, err
	}
	return patchEntries(filesImg, func(fe *fdinfo.FileEntry) (bool, error) {
		reg := fe.GetReg()
		fd, open := regFD[fe.GetId()]
		if reg == nil || !open {
			return false, nil
		}
		st, err := state(fd)
		if err != nil {
			return false, fmt.Errorf("file descriptor %d: %w", fd, err)
		}
		reg.Pos, reg.Flags = proto.Uint64(uint64(st.Pos)), proto.Uint32(st.Flags&^unix.O_CLOEXEC)
		if reg.Size != nil {
			reg.Size = proto.Uint64(uint64(st.Size))
		}
		return true, nil
	})
}

// descriptorsOf maps the files.img ids of the descriptors of one kind in
// an fdinfo-<n>.img to their numbers.
func descriptorsOf(fdinfoImg []byte, kind fdinfo.FdTypes) (map[uint32]int, error) {
	fds, err := criuimage.DecodeRecords(fdinfoImg, fdinfoMagic)
	if err != nil {
		return nil, fmt.Errorf("fdinfo image: %w", err)
	}
	out := map[uint32]int{}
	for i, rec := range fds.Entries {
		var e fdinfo.FdinfoEntry
		if err := proto.Unmarshal(rec, &e); err != nil {
			return nil, fmt.Errorf("fdinfo image entry %d: %w", i, err)
		}
		if e.GetType() == kind {
			out[e.GetId()] = int(e.GetFd())
		}
	}
	return out, nil
}

// patchEntries decodes files.img, lets patch change each entry (it says
// whether it did) and encodes it again.
func patchEntries(filesImg []byte, patch func(*fdinfo.FileEntry) (bool, error)) ([]byte, error) {
	r, err := criuimage.DecodeRecords(filesImg, filesMagic)
	if err != nil {
		return nil, fmt.Errorf("files image: %w", err)
	}
	for i, rec := range r.Entries {
		var fe fdinfo.FileEntry
		if err := proto.Unmarshal(rec, &fe); err != nil {
			return nil, fmt.Errorf("files image entry %d: %w", i, err)
		}
		changed, err := patch(&fe)
		if err != nil {
			return nil, err
		}
		if !changed {
			continue
		}
		if r.Entries[i], err = (proto.MarshalOptions{Deterministic: true}).Marshal(&fe); err != nil {
			return nil, fmt.Errorf("files image entry %d: %w", i, err)
		}
	}
	return r.Encode(), nil
}

// PatchEpolls returns files.img (whole file, of the previous checkpoint)
// with each epoll instance of the process watching what it watches now:
// fdinfoImg is the process's fdinfo-<n>.img of the same checkpoint (which
// of its descriptors is which files.img entry), targets reads an epoll
// descriptor's targets now (ParseFDInfo of /proc/<pid>/fdinfo/<fd>).
func PatchEpolls(filesImg, fdinfoImg []byte, targets func(fd int) ([]EpollTarget, error)) ([]byte, error) {
	epollFD, err := descriptorsOf(fdinfoImg, fdinfo.FdTypes_EVENTPOLL)
	if err != nil {
		return nil, err
	}
	return patchEntries(filesImg, func(fe *fdinfo.FileEntry) (bool, error) {
		ep := fe.GetEpfd()
		if ep == nil {
			return false, nil
		}
		fd, ok := epollFD[ep.GetId()]
		if !ok {
			return false, fmt.Errorf("epoll instance %d is no descriptor of this process: %w", ep.GetId(), ErrUnsupported)
		}
		ts, err := targets(fd)
		if err != nil {
			return false, fmt.Errorf("epoll descriptor %d: %w", fd, err)
		}
		ep.Tfd = ep.Tfd[:0]
		for _, t := range ts {
			ep.Tfd = append(ep.Tfd, &eventpoll.EventpollTfdEntry{
				Id: proto.Uint32(0), Tfd: proto.Uint32(uint32(t.TFD)), Events: proto.Uint32(t.Events), Data: proto.Uint64(t.Data),
				Dev: proto.Uint32(t.Dev), Inode: proto.Uint64(t.Ino), Pos: proto.Uint64(uint64(t.Pos)),
			})
		}
		return true, nil
	})
}
