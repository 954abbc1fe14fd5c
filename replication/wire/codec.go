// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"encoding/binary"
	"fmt"
)

// decoder reads the fields of a payload. The first error sticks; done()
// also refuses trailing bytes, so that one payload has exactly one encoding.
type decoder struct {
	what string
	b    []byte
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrMalformed, d.what, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.fail("%s needs %d bytes, %d left", field, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8(field string) uint8 {
	if b := d.take(1, field); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16(field string) uint16 {
	if b := d.take(2, field); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if b := d.take(4, field); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64(field string) uint64 {
	if b := d.take(8, field); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// str reads a u16-length-prefixed UTF-8 string of at most max bytes.
func (d *decoder) str(field string, max int) string {
	n := int(d.u16(field + " length"))
	if d.err == nil && n > max {
		d.fail("%s of %d bytes exceeds %d", field, n, max)
		return ""
	}
	return string(d.take(n, field))
}

// bytes reads a u32-length-prefixed byte string of at most max bytes.
func (d *decoder) bytes(field string, max int) []byte {
	n := d.u32(field + " length")
	if d.err == nil && uint64(n) > uint64(max) {
		d.fail("%s of %d bytes exceeds %d", field, n, max)
		return nil
	}
	return d.take(int(n), field)
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}
