package peer

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkCheckpointTransfer measures a full checkpoint transfer over
// loopback TLS 1.3, from Send to the backup's Ack: reading and hashing on
// the primary, encryption, framing, writing, hashing and fsync on the
// backup, and the atomic commit.
func BenchmarkCheckpointTransfer(b *testing.B) {
	for _, chunk := range []int{256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("chunk=%dKiB", chunk>>10), func(b *testing.B) {
			e := newEnv(b)
			addr, _, _, _ := startBackup(b, baseOptions(b, primaryName), e.backup, b.TempDir())
			opts := baseOptions(b, backupName)
			opts.ChunkSize = chunk
			s := dial(b, addr, e.primary, opts)
			src := b.TempDir()
			const files, size = 8, 4 << 20 // 32 MB
			writeTree(b, src, files, size)
			b.SetBytes(files*size + files*(files-1)/2)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				epoch := uint64(i + 1)
				ctx := context.Background()
				if err := s.Send(ctx, checkpoint(epoch, src)); err != nil {
					b.Fatal(err)
				}
				if err := s.WaitAck(ctx, epoch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
