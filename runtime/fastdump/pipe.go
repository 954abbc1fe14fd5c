// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package fastdump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	pipedata "github.com/checkpoint-restore/go-criu/v7/crit/images/pipe-data"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// pipesDataMagic is PIPES_DATA_MAGIC, the second word of pipes-data.img.
const pipesDataMagic = 0x56453709

// PipeData is what CRIU's pipes-data.img holds of one pipe: its inode, its
// buffer size, and the bytes in it.
type PipeData struct {
	ID   uint32 // the pipe's inode
	Size uint32 // F_GETPIPE_SZ
	Data []byte
}

// CapturePipe copies, without taking them, the bytes in the pipe whose read
// end fd is (this process's duplicate of the container's descriptor), as
// CRIU does: tee(2) into a pipe of the same size.
func CapturePipe(fd int) (PipeData, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return PipeData{}, fmt.Errorf("pipe: %w", err)
	}
	p := PipeData{ID: uint32(st.Ino)}
	size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return p, fmt.Errorf("pipe %d: size: %w", p.ID, err)
	}
	p.Size = uint32(size)
	r, w, err := os.Pipe()
	if err != nil {
		return p, fmt.Errorf("pipe %d: %w", p.ID, err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, size); err != nil {
		return p, fmt.Errorf("pipe %d: size of the copy: %w", p.ID, err)
	}
	n, err := unix.Tee(fd, int(w.Fd()), size, unix.SPLICE_F_NONBLOCK)
	if errors.Is(err, unix.EAGAIN) {
		return p, nil // empty
	}
	if err != nil {
		return p, fmt.Errorf("pipe %d: tee: %w", p.ID, err)
	}
	p.Data = make([]byte, n)
	if _, err := io.ReadFull(r, p.Data); err != nil {
		return p, fmt.Errorf("pipe %d: read the copy: %w", p.ID, err)
	}
	return p, nil
}

// PipesDataImage writes CRIU's pipes-data.img: one entry and its bytes per
// pipe, in the order given (CRIU's: the order of the descriptors dumped).
func PipesDataImage(pipes []PipeData) ([]byte, error) {
	b := binary.LittleEndian.AppendUint32(nil, 0x54564319) // IMG_COMMON_MAGIC
	b = binary.LittleEndian.AppendUint32(b, pipesDataMagic)
	for _, p := range pipes {
		rec, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pipedata.PipeDataEntry{
			PipeId: proto.Uint32(p.ID), Bytes: proto.Uint32(uint32(len(p.Data))), Size: proto.Uint32(p.Size),
		})
		if err != nil {
			return nil, fmt.Errorf("pipe %d: %w", p.ID, err)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(rec)))
		b = append(b, rec...)
		b = append(b, p.Data...)
	}
	return b, nil
}
