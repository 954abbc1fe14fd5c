// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// coreMagic is CORE_MAGIC, the second word of a core-<pid>.img.
	coreMagic = 0x55053847
	// maxImageRecord bounds one record of an image DecodeRecords reads (a
	// core record with its signal actions and limits is a few KB).
	maxImageRecord = 1 << 20
)

// Records is a protobuf image as CRIU frames it: the two magic words of
// image format 1.1, then records of a 32-bit length and a message.
type Records struct {
	Magic   uint32 // the image's own magic (second word)
	Entries [][]byte
}

// DecodeRecords splits an image into its records, checking the framing
// only; want, if not 0, is the magic the image must have.
func DecodeRecords(b []byte, want uint32) (*Records, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("decode image: %d bytes, too short for the magic", len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m != imgCommonMagic {
		return nil, fmt.Errorf("decode image: magic %#08x, want %#08x", m, imgCommonMagic)
	}
	r := &Records{Magic: binary.LittleEndian.Uint32(b[4:])}
	if want != 0 && r.Magic != want {
		return nil, fmt.Errorf("decode image: magic %#08x, want %#08x", r.Magic, want)
	}
	for off := 8; off < len(b); {
		rec, next, err := nextRecordUpTo(b, off, maxImageRecord)
		if err != nil {
			return nil, fmt.Errorf("decode image: record at offset %d: %w", off, err)
		}
		r.Entries = append(r.Entries, rec)
		off = next
	}
	return r, nil
}

// Encode frames the records again.
func (r *Records) Encode() []byte {
	n := 8
	for _, e := range r.Entries {
		n += 4 + len(e)
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, imgCommonMagic)
	b = binary.LittleEndian.AppendUint32(b, r.Magic)
	for _, e := range r.Entries {
		b = appendRecord(b, e)
	}
	return b
}

// DecodeCore returns the one record of a core-<pid>.img.
func DecodeCore(b []byte) ([]byte, error) {
	r, err := DecodeRecords(b, coreMagic)
	if err != nil {
		return nil, fmt.Errorf("core image: %w", err)
	}
	if len(r.Entries) != 1 {
		return nil, errors.New("core image: want exactly one record, have " + fmt.Sprint(len(r.Entries)))
	}
	return r.Entries[0], nil
}

// EncodeCore frames one core record.
func EncodeCore(rec []byte) []byte {
	return (&Records{Magic: coreMagic, Entries: [][]byte{rec}}).Encode()
}
