// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package peer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/iorrc/rrc/replication/wire"
)

// BenchmarkCheckpointTransfer measures a checkpoint transfer over loopback
// TLS 1.3, from Send to the backup's Ack: reading and hashing on the
// primary, encryption, framing, writing and hashing on the backup, and the
// atomic commit. full: every checkpoint is new content (the first of a
// session, or everything changed); delta-1%: 1 % of the blocks change per
// checkpoint, the rest is copied on the backup from the previous one.
func BenchmarkCheckpointTransfer(b *testing.B) {
	const size = 32 << 20
	for _, tc := range []struct {
		name    string
		changed float64 // fraction of blocks rewritten per checkpoint; 1: all
		chunk   int
	}{{"full/chunk=256KiB", 1, 256 << 10}, {"full/chunk=1024KiB", 1, 1 << 20}, {"delta-1%/chunk=256KiB", 0.01, 256 << 10}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b)
			addr, _, _, _ := startBackup(b, baseOptions(b, primaryName), e.backup, b.TempDir())
			opts := baseOptions(b, backupName)
			opts.ChunkSize = tc.chunk
			s := dial(b, addr, e.primary, opts)
			rng := rand.NewChaCha8([32]byte{1})
			pick := rand.New(rng)
			pages := make([]byte, size)
			rng.Read(pages)
			dir := b.TempDir()
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if tc.changed >= 1 || i == 0 {
					rng.Read(pages)
				} else {
					for n := int(float64(size/wire.BlockSize) * tc.changed); n > 0; n-- {
						blk := pick.IntN(size / wire.BlockSize)
						rng.Read(pages[blk*wire.BlockSize : (blk+1)*wire.BlockSize])
					}
				}
				src := filepath.Join(dir, fmt.Sprint(i))
				if err := os.Mkdir(src, 0o700); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(src, "pages-1.img"), pages, 0o600); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				epoch := uint64(i + 1)
				ctx := context.Background()
				if _, err := s.Send(ctx, checkpoint(epoch, src)); err != nil {
					b.Fatal(err)
				}
				if err := s.WaitAck(ctx, epoch); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(src)
				b.StartTimer()
			}
		})
	}
}
