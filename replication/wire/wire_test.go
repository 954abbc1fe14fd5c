// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

var testPair = PairIDOf("redis-1")

// stream encodes frames as the given role would write them.
func stream(frames ...func(e *Encoder, dst []byte) []byte) []byte {
	e := &Encoder{Pair: testPair}
	var b []byte
	for _, f := range frames {
		b = f(e, b)
	}
	return b
}

func fr(t Type, epoch uint64, payload []byte) func(*Encoder, []byte) []byte {
	return func(e *Encoder, dst []byte) []byte { return e.Append(dst, t, epoch, payload) }
}

var (
	helloP = Hello{MinVersion: 1, MaxVersion: 1, Role: RolePrimary, Mode: ModeEpoch, Heartbeat: 30 * time.Millisecond, Pair: "redis-1", Image: "sha256:0a1b"}.Append(nil)
	hbP    = Heartbeat{SentAt: time.Unix(1, 0)}.Append(nil)
	beginP = CheckpointBegin{TotalSize: 3, FileCount: 1}.Append(nil)
	chunkP = CheckpointChunk{Path: "a/b.img", Mode: 0o600, FileSize: 3, Data: []byte("abc")}.Append(nil)
	endP   = CheckpointEnd{}.Append(nil)
	byeP   = Goodbye{Reason: GoodbyeDeleted, Message: "container deleted"}.Append(nil)
	copyP  = CheckpointCopy{Path: "a/a.img", Mode: 0o600, FileSize: BlockSize, Length: BlockSize, BasePath: "a/a.img"}.Append(nil)
)

func readAll(b []byte, role Role) error {
	r := NewReader(bytes.NewReader(b), ReaderOptions{Pair: testPair, PeerRole: role})
	for {
		if _, err := r.Next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func TestReaderStreams(t *testing.T) {
	good := stream(fr(TypeHello, 0, helloP), fr(TypeHeartbeat, 0, hbP),
		fr(TypeCheckpointBegin, 1, beginP), fr(TypeCheckpointChunk, 1, chunkP), fr(TypeHeartbeat, 1, hbP), fr(TypeCheckpointEnd, 1, endP),
		fr(TypeCheckpointBegin, 2, beginP), fr(TypeCheckpointCopy, 2, copyP), fr(TypeCheckpointChunk, 2, chunkP), fr(TypeCheckpointEnd, 2, endP),
		fr(TypeCheckpointBegin, 3, beginP), fr(TypeCheckpointAbort, 3, CheckpointAbort{Reason: "x"}.Append(nil)),
		fr(TypeCheckpointBegin, 5, beginP), fr(TypeCheckpointEnd, 5, endP))
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	hello := stream(fr(TypeHello, 0, helloP))
	tests := []struct {
		name string
		in   []byte
		role Role
		want error
	}{
		{"good", good, RolePrimary, nil},
		{"empty", nil, RolePrimary, nil},
		{"bad magic", flip(good, 0), RolePrimary, ErrBadMagic},
		{"bad version", flip(good, 4), RolePrimary, ErrBadVersion},
		{"unknown type", func() []byte { c := bytes.Clone(good); c[5] = 99; return c }(), RolePrimary, ErrUnknownType},
		{"flags", flip(good, 7), RolePrimary, ErrBadFlags},
		{"checksum header", flip(good, 20), RolePrimary, ErrChecksum},
		{"checksum payload", flip(good, HeaderSize+2), RolePrimary, ErrChecksum},
		{"too large", stream(fr(TypeHello, 0, make([]byte, DefaultMaxPayload+1))), RolePrimary, ErrPayloadTooLarge},
		{"truncated header", good[:10], RolePrimary, ErrTruncated},
		{"truncated payload", good[:HeaderSize+3], RolePrimary, ErrTruncated},
		{"truncated later", good[:len(good)-1], RolePrimary, ErrTruncated},
		{"pair", func() []byte { e := &Encoder{Pair: PairIDOf("other")}; return e.Append(nil, TypeHello, 0, helloP) }(), RolePrimary, ErrPairMismatch},
		{"no hello", stream(fr(TypeHeartbeat, 0, hbP)), RolePrimary, ErrUnexpectedFrame},
		{"two hellos", stream(fr(TypeHello, 0, helloP), fr(TypeHello, 0, helloP)), RolePrimary, ErrUnexpectedFrame},
		{"seq gap", append(bytes.Clone(hello), AppendFrame(nil, Header{Type: TypeHeartbeat, Pair: testPair, Seq: 3}, hbP)...), RolePrimary, ErrSequence},
		{"seq repeat", append(bytes.Clone(hello), hello...), RolePrimary, ErrSequence},
		{"seq start", AppendFrame(nil, Header{Type: TypeHello, Pair: testPair, Seq: 0}, helloP), RolePrimary, ErrSequence},
		{"ack from primary", stream(fr(TypeHello, 0, helloP), fr(TypeAck, 1, Ack{}.Append(nil))), RolePrimary, ErrUnexpectedFrame},
		{"chunk from backup", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointChunk, 1, chunkP)), RoleBackup, ErrUnexpectedFrame},
		{"epoch repeat", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 2, beginP), fr(TypeCheckpointEnd, 2, endP), fr(TypeCheckpointBegin, 2, beginP)), RolePrimary, ErrEpochOrder},
		{"epoch back", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 2, beginP), fr(TypeCheckpointEnd, 2, endP), fr(TypeCheckpointBegin, 1, beginP)), RolePrimary, ErrEpochOrder},
		{"epoch zero", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 0, beginP)), RolePrimary, ErrEpochOrder},
		{"chunk other epoch", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 2, beginP), fr(TypeCheckpointChunk, 3, chunkP)), RolePrimary, ErrEpochOrder},
		{"chunk outside", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointChunk, 3, chunkP)), RolePrimary, ErrUnexpectedFrame},
		{"nested begin", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 2, beginP), fr(TypeCheckpointBegin, 3, beginP)), RolePrimary, ErrUnexpectedFrame},
		{"heartbeat back", stream(fr(TypeHello, 0, helloP), fr(TypeHeartbeat, 4, hbP), fr(TypeHeartbeat, 3, hbP)), RolePrimary, ErrEpochOrder},
		{"ack order", stream(fr(TypeHello, 0, helloP), fr(TypeAck, 4, Ack{}.Append(nil)), fr(TypeAck, 4, Ack{}.Append(nil))), RoleBackup, ErrEpochOrder},
		{"ack ok", stream(fr(TypeHello, 0, helloP), fr(TypeAck, 4, Ack{}.Append(nil)), fr(TypeAck, 5, Ack{}.Append(nil))), RoleBackup, nil},
		{"goodbye last", stream(fr(TypeHello, 0, helloP), fr(TypeHeartbeat, 1, hbP), fr(TypeGoodbye, 1, byeP)), RolePrimary, nil},
		{"goodbye mid-transfer", stream(fr(TypeHello, 0, helloP), fr(TypeCheckpointBegin, 2, beginP), fr(TypeGoodbye, 1, byeP)), RolePrimary, nil},
		{"frame after goodbye", stream(fr(TypeHello, 0, helloP), fr(TypeGoodbye, 1, byeP), fr(TypeHeartbeat, 1, hbP)), RolePrimary, ErrUnexpectedFrame},
		{"second goodbye", stream(fr(TypeHello, 0, helloP), fr(TypeGoodbye, 1, byeP), fr(TypeGoodbye, 1, byeP)), RolePrimary, ErrUnexpectedFrame},
		{"goodbye from backup", stream(fr(TypeHello, 0, helloP), fr(TypeGoodbye, 0, byeP)), RoleBackup, ErrUnexpectedFrame},
		{"goodbye before hello", stream(fr(TypeGoodbye, 0, byeP)), RolePrimary, ErrUnexpectedFrame},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := readAll(tc.in, tc.role)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReaderErrorIsSticky(t *testing.T) {
	r := NewReader(bytes.NewReader([]byte("garbage that is long enough to be a header.....")), ReaderOptions{Pair: testPair, PeerRole: RolePrimary})
	_, err1 := r.Next()
	_, err2 := r.Next()
	if err1 == nil || err1 != err2 {
		t.Fatalf("errors %v, %v", err1, err2)
	}
}

func TestPayloadRoundTrips(t *testing.T) {
	now := time.Unix(1700000000, 123)
	h := Hello{MinVersion: 1, MaxVersion: 2, Role: RoleBackup, Mode: ModeHybrid, Heartbeat: time.Second, Pair: "p"}
	if got, err := DecodeHello(h.Append(nil)); err != nil || got != h {
		t.Errorf("Hello: %+v %v", got, err)
	}
	hb := Heartbeat{SentAt: now, Echo: now.Add(-time.Millisecond)}
	if got, err := DecodeHeartbeat(hb.Append(nil)); err != nil || !got.SentAt.Equal(hb.SentAt) || !got.Echo.Equal(hb.Echo) {
		t.Errorf("Heartbeat: %+v %v", got, err)
	}
	c := CheckpointChunk{Path: "pages-1.img", Mode: 0o644, FileSize: 10, Offset: 7, Data: []byte("xyz")}
	if got, err := DecodeCheckpointChunk(c.Append(nil)); err != nil || got.Path != c.Path || got.Mode != c.Mode || got.FileSize != 10 || got.Offset != 7 || string(got.Data) != "xyz" {
		t.Errorf("Chunk: %+v %v", got, err)
	}
	cp := CheckpointCopy{Path: "pages-1.img", Mode: 0o600, FileSize: 3*BlockSize + 10, Offset: BlockSize, Length: 2*BlockSize + 10,
		BasePath: "pages-2.img", BaseOffset: 5 * BlockSize}
	if got, err := DecodeCheckpointCopy(cp.Append(nil)); err != nil || got != cp {
		t.Errorf("Copy: %+v %v", got, err)
	}
	b := CheckpointBegin{TotalSize: 1 << 40, FileCount: 7, BaseEpoch: 3}
	if got, err := DecodeCheckpointBegin(b.Append(nil)); err != nil || got != b {
		t.Errorf("Begin: %+v %v", got, err)
	}
	e := Error{Code: CodeCorrupt, Message: strings.Repeat("é", MaxMessageLen)}
	got, err := DecodeError(e.Append(nil))
	if err != nil || got.Code != CodeCorrupt || len(got.Message) > MaxMessageLen {
		t.Errorf("Error: %v", err)
	}
	l := LogRecord{Index: 9, Data: []byte{1, 2}}
	if got, err := DecodeLogRecord(l.Append(nil)); err != nil || got.Index != 9 || !bytes.Equal(got.Data, l.Data) {
		t.Errorf("LogRecord: %+v %v", got, err)
	}
	if got, err := DecodeLogAck(LogAck{Index: 4}.Append(nil)); err != nil || got.Index != 4 {
		t.Errorf("LogAck: %+v %v", got, err)
	}
	for _, g := range []Goodbye{{Reason: GoodbyeDeleted, Message: "container deleted"}, {Reason: GoodbyeShutdown}, {Reason: GoodbyeDemoted, Message: "é"}, {Reason: GoodbyeDegraded, Message: "backup silent"}} {
		if got, err := DecodeGoodbye(g.Append(nil)); err != nil || got != g {
			t.Errorf("Goodbye %+v: %+v %v", g, got, err)
		}
	}
	long := Goodbye{Reason: GoodbyeShutdown, Message: strings.Repeat("é", MaxMessageLen)}
	if got, err := DecodeGoodbye(long.Append(nil)); err != nil || len(got.Message) > MaxMessageLen {
		t.Errorf("long Goodbye: %d bytes, %v", len(got.Message), err)
	}
}

func TestPayloadRejects(t *testing.T) {
	chunk := func(c CheckpointChunk) []byte { return c.Append(nil) }
	tests := []struct {
		name   string
		decode func([]byte) error
		in     []byte
	}{
		{"hello empty", func(b []byte) error { _, err := DecodeHello(b); return err }, nil},
		{"hello trailing", func(b []byte) error { _, err := DecodeHello(b); return err }, append(bytes.Clone(helloP), 0)},
		{"hello role", func(b []byte) error { _, err := DecodeHello(b); return err },
			Hello{MinVersion: 1, MaxVersion: 1, Role: 7, Mode: ModeEpoch, Heartbeat: 1, Pair: "p"}.Append(nil)},
		{"hello versions", func(b []byte) error { _, err := DecodeHello(b); return err },
			Hello{MinVersion: 2, MaxVersion: 1, Role: RolePrimary, Mode: ModeEpoch, Heartbeat: 1, Pair: "p"}.Append(nil)},
		{"hello no pair", func(b []byte) error { _, err := DecodeHello(b); return err },
			Hello{MinVersion: 1, MaxVersion: 1, Role: RolePrimary, Mode: ModeEpoch, Heartbeat: 1}.Append(nil)},
		{"heartbeat short", func(b []byte) error { _, err := DecodeHeartbeat(b); return err }, hbP[:15]},
		{"heartbeat zero", func(b []byte) error { _, err := DecodeHeartbeat(b); return err }, make([]byte, 16)},
		{"chunk dotdot", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunk(CheckpointChunk{Path: "../etc/passwd", FileSize: 0})},
		{"chunk absolute", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunk(CheckpointChunk{Path: "/etc/passwd"})},
		{"chunk dot", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunk(CheckpointChunk{Path: "."})},
		{"chunk mode", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunk(CheckpointChunk{Path: "a", Mode: 0o4755})},
		{"chunk overrun", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunk(CheckpointChunk{Path: "a", FileSize: 2, Offset: 1, Data: []byte("ab")})},
		{"chunk offset overflow", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunk(CheckpointChunk{Path: "a", FileSize: 1, Offset: ^uint64(0), Data: []byte("ab")})},
		{"chunk data too long", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunk(CheckpointChunk{Path: "a", FileSize: MaxChunkData + 1, Data: make([]byte, MaxChunkData+1)})},
		{"chunk length lies", func(b []byte) error { _, err := DecodeCheckpointChunk(b); return err }, chunkP[:len(chunkP)-1]},
		{"copy empty", decodeCopy, CheckpointCopy{Path: "a", BasePath: "a", FileSize: BlockSize}.Append(nil)},
		{"copy unaligned", decodeCopy, CheckpointCopy{Path: "a", BasePath: "a", FileSize: 2 * BlockSize, Offset: 1, Length: BlockSize}.Append(nil)},
		{"copy unaligned base", decodeCopy, CheckpointCopy{Path: "a", BasePath: "a", FileSize: BlockSize, Length: BlockSize, BaseOffset: 512}.Append(nil)},
		{"copy short block inside", decodeCopy, CheckpointCopy{Path: "a", BasePath: "a", FileSize: 2 * BlockSize, Length: 100}.Append(nil)},
		{"copy overrun", decodeCopy, CheckpointCopy{Path: "a", BasePath: "a", FileSize: BlockSize, Offset: BlockSize, Length: BlockSize}.Append(nil)},
		{"copy base dotdot", decodeCopy, CheckpointCopy{Path: "a", BasePath: "../a", FileSize: BlockSize, Length: BlockSize}.Append(nil)},
		{"copy base overflow", decodeCopy, CheckpointCopy{Path: "a", BasePath: "a", FileSize: BlockSize, Length: BlockSize, BaseOffset: ^uint64(0) &^ (BlockSize - 1)}.Append(nil)},
		{"copy trailing", decodeCopy, append(CheckpointCopy{Path: "a", BasePath: "a", FileSize: BlockSize, Length: BlockSize}.Append(nil), 0)},
		{"end short", func(b []byte) error { _, err := DecodeCheckpointEnd(b); return err }, make([]byte, 31)},
		{"ack long", func(b []byte) error { _, err := DecodeAck(b); return err }, make([]byte, 33)},
		{"error code 0", func(b []byte) error { _, err := DecodeError(b); return err }, Error{}.Append(nil)},
		{"log index 0", func(b []byte) error { _, err := DecodeLogRecord(b); return err }, LogRecord{}.Append(nil)},
		{"logack index 0", func(b []byte) error { _, err := DecodeLogAck(b); return err }, LogAck{}.Append(nil)},
		{"goodbye empty", decodeGoodbye, nil},
		{"goodbye reason 0", decodeGoodbye, Goodbye{Message: "x"}.Append(nil)},
		{"goodbye unknown reason", decodeGoodbye, Goodbye{Reason: 5}.Append(nil)},
		{"goodbye trailing", decodeGoodbye, append(Goodbye{Reason: GoodbyeShutdown}.Append(nil), 0)},
		{"goodbye message short", decodeGoodbye, Goodbye{Reason: GoodbyeShutdown, Message: "abc"}.Append(nil)[:4]},
		{"goodbye not utf-8", decodeGoodbye, Goodbye{Reason: GoodbyeShutdown, Message: "\xff\xfe"}.Append(nil)},
		{"goodbye message too long", decodeGoodbye, append([]byte{byte(GoodbyeShutdown), 0x10, 0x01}, make([]byte, MaxMessageLen+1)...)},
	}
	for _, tc := range tests {
		if err := tc.decode(tc.in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", tc.name, err)
		}
	}
}

func decodeCopy(b []byte) error { _, err := DecodeCheckpointCopy(b); return err }

func decodeGoodbye(b []byte) error { _, err := DecodeGoodbye(b); return err }

// The digest depends on the content, not on how it was fed: any split of
// Write calls, or the digests of whole blocks given with AddBlock, give the
// same result, and the kept block digests are the blocks' SHA-256.
func TestContentDigestBlocks(t *testing.T) {
	data := make([]byte, 3*BlockSize+123)
	for i := range data {
		data[i] = byte(i*7 + i/BlockSize)
	}
	whole := NewContentHasher()
	whole.BeginFile("pages-1.img", 0o600, uint64(len(data)))
	whole.Write(data)
	want := whole.Sum()
	for _, piece := range []int{1, 100, BlockSize - 1, BlockSize, BlockSize + 1, len(data)} {
		h := NewBlockKeepingHasher()
		h.BeginFile("pages-1.img", 0o600, uint64(len(data)))
		for off := 0; off < len(data); off += piece {
			h.Write(data[off:min(off+piece, len(data))])
		}
		blocks := h.FileBlocks()
		if len(blocks) != 4 || blocks[3] != HashBlock(data[3*BlockSize:]) || blocks[0] != HashBlock(data[:BlockSize]) {
			t.Fatalf("pieces of %d: %d block digests, or wrong ones", piece, len(blocks))
		}
		if got := h.Sum(); got != want {
			t.Errorf("pieces of %d: digest differs", piece)
		}
	}
	h := NewContentHasher()
	h.BeginFile("pages-1.img", 0o600, uint64(len(data)))
	h.Write(data[:BlockSize])
	h.AddBlock(HashBlock(data[BlockSize:2*BlockSize]), BlockSize)
	h.Write(data[2*BlockSize:])
	if h.Fed() != uint64(len(data)) || h.Sum() != want {
		t.Error("AddBlock of a block's digest differs from writing the block")
	}
	h = NewContentHasher()
	h.BeginFile("pages-1.img", 0o600, uint64(len(data)))
	h.Write(data[:BlockSize])
	h.AddBlock(HashBlock(data[:BlockSize]), BlockSize) // another block's digest
	h.Write(data[2*BlockSize:])
	if h.Sum() == want {
		t.Error("digest ignores a wrong block")
	}
}

func TestContentDigestCoversMetadata(t *testing.T) {
	sum := func(path string, mode uint32, data string) [32]byte {
		h := NewContentHasher()
		h.BeginFile(path, 0o600, uint64(len(data)))
		if mode != 0 {
			h = NewContentHasher()
			h.BeginFile(path, 0o644, uint64(len(data)))
		}
		h.Write([]byte(data))
		return h.Sum()
	}
	a := sum("a", 0, "xy")
	for name, other := range map[string][32]byte{"path": sum("b", 0, "xy"), "mode": sum("a", 1, "xy"), "data": sum("a", 0, "xz")} {
		if other == a {
			t.Errorf("digest ignores %s", name)
		}
	}
	if sum("a", 0, "xy") != a {
		t.Error("digest not deterministic")
	}
}
