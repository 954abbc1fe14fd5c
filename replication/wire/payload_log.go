// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import "encoding/binary"

// LogRecord is reserved for hybrid mode: one record of the input log that
// follows the checkpoint of the header's epoch. Index numbers records from 1
// after each checkpoint and increases by one per record; the record's content
// (an input packet with its timing, a digest of released output) is the
// engine's encoding, opaque here.
type LogRecord struct {
	Index uint64
	Data  []byte
}

// MaxLogRecordData bounds one log record (a packet with metadata).
const MaxLogRecordData = 256 << 10

func (l LogRecord) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, l.Index)
	return appendBytes(dst, l.Data)
}

// DecodeLogRecord decodes a log record; Data aliases b.
func DecodeLogRecord(b []byte) (LogRecord, error) {
	d := decoder{what: "LogRecord", b: b}
	l := LogRecord{Index: d.u64("index")}
	l.Data = d.bytes("data", MaxLogRecordData)
	if err := d.done(); err != nil {
		return LogRecord{}, err
	}
	if l.Index == 0 {
		d.fail("index 0")
	}
	return l, d.err
}

// LogAck acknowledges, cumulatively, the log records of the header's epoch
// up to Index as durable on the backup; the primary may release output
// produced up to there.
type LogAck struct {
	Index uint64
}

func (l LogAck) Append(dst []byte) []byte { return binary.BigEndian.AppendUint64(dst, l.Index) }

func DecodeLogAck(b []byte) (LogAck, error) {
	d := decoder{what: "LogAck", b: b}
	l := LogAck{Index: d.u64("index")}
	if err := d.done(); err != nil {
		return LogAck{}, err
	}
	if l.Index == 0 {
		d.fail("index 0")
	}
	return l, d.err
}
