// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	skopts "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-opts"
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
	r, err := criuimage.DecodeRecords(img, filesMagic)
	if err != nil {
		return nil, fmt.Errorf("files image: %w", err)
	}
	seen := 0
	for i, rec := range r.Entries {
		var fe fdinfo.FileEntry
		if err := proto.Unmarshal(rec, &fe); err != nil {
			return nil, fmt.Errorf("files image entry %d: %w", i, err)
		}
		isk := fe.GetIsk()
		if isk == nil || isk.GetProto() != 6 || isk.GetDstPort() == 0 {
			continue // not a connected TCP socket: a listener is as it was
		}
		s, ok := socks[uint64(isk.GetIno())]
		if !ok {
			return nil, fmt.Errorf("socket %d of the previous checkpoint is gone: %w", isk.GetIno(), ErrChanged)
		}
		if isk.GetState() != tcpEstablished || isk.Shutdown != nil {
			return nil, fmt.Errorf("socket %d was not an open connection (state %d): %w", isk.GetIno(), isk.GetState(), ErrChanged)
		}
		seen++
		isk.Opts = s.Opts
		isk.ProtoReflect().SetUnknown(replaceField(isk.ProtoReflect().GetUnknown(), tcpOptsField, s.TCPOpts))
		if r.Entries[i], err = (proto.MarshalOptions{Deterministic: true}).Marshal(&fe); err != nil {
			return nil, fmt.Errorf("files image entry %d: %w", i, err)
		}
	}
	if seen != len(socks) {
		return nil, fmt.Errorf("%d connections, %d in the previous checkpoint: %w", len(socks), seen, ErrChanged)
	}
	return r.Encode(), nil
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

// PatchEpolls returns files.img (whole file, of the previous checkpoint)
// with each epoll instance of the process watching what it watches now:
// fdinfoImg is the process's fdinfo-<n>.img of the same checkpoint (which
// of its descriptors is which files.img entry), targets reads an epoll
// descriptor's targets now (ParseFDInfo of /proc/<pid>/fdinfo/<fd>).
func PatchEpolls(filesImg, fdinfoImg []byte, targets func(fd int) ([]EpollTarget, error)) ([]byte, error) {
	fds, err := criuimage.DecodeRecords(fdinfoImg, fdinfoMagic)
	if err != nil {
		return nil, fmt.Errorf("fdinfo image: %w", err)
	}
	epollFD := map[uint32]int{} // files.img id → descriptor
	for i, rec := range fds.Entries {
		var e fdinfo.FdinfoEntry
		if err := proto.Unmarshal(rec, &e); err != nil {
			return nil, fmt.Errorf("fdinfo image entry %d: %w", i, err)
		}
		if e.GetType() == fdinfo.FdTypes_EVENTPOLL {
			epollFD[e.GetId()] = int(e.GetFd())
		}
	}
	r, err := criuimage.DecodeRecords(filesImg, filesMagic)
	if err != nil {
		return nil, fmt.Errorf("files image: %w", err)
	}
	for i, rec := range r.Entries {
		var fe fdinfo.FileEntry
		if err := proto.Unmarshal(rec, &fe); err != nil {
			return nil, fmt.Errorf("files image entry %d: %w", i, err)
		}
		ep := fe.GetEpfd()
		if ep == nil {
			continue
		}
		fd, ok := epollFD[ep.GetId()]
		if !ok {
			return nil, fmt.Errorf("epoll instance %d is no descriptor of this process: %w", ep.GetId(), ErrUnsupported)
		}
		ts, err := targets(fd)
		if err != nil {
			return nil, fmt.Errorf("epoll descriptor %d: %w", fd, err)
		}
		ep.Tfd = ep.Tfd[:0]
		for _, t := range ts {
			ep.Tfd = append(ep.Tfd, &eventpoll.EventpollTfdEntry{
				Id: proto.Uint32(0), Tfd: proto.Uint32(uint32(t.TFD)), Events: proto.Uint32(t.Events), Data: proto.Uint64(t.Data),
				Dev: proto.Uint32(t.Dev), Inode: proto.Uint64(t.Ino), Pos: proto.Uint64(uint64(t.Pos)),
			})
		}
		if r.Entries[i], err = (proto.MarshalOptions{Deterministic: true}).Marshal(&fe); err != nil {
			return nil, fmt.Errorf("files image entry %d: %w", i, err)
		}
	}
	return r.Encode(), nil
}
