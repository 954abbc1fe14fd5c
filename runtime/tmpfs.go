package runtime

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MountImageTmpfs mounts a tmpfs of size bytes at dir (created) for
// checkpoint images: CRIU writes every page of the container each epoch, and
// on tmpfs that is a memory copy, not disk I/O. The returned function
// unmounts it (lazily, so that a leftover open file cannot pin it) and removes dir.
func MountImageTmpfs(dir string, size int64) (unmount func() error, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create image tmpfs dir %s: %w", dir, err)
	}
	data := "mode=0700"
	if size > 0 {
		data += fmt.Sprintf(",size=%d", size)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data); err != nil {
		return nil, fmt.Errorf("mount image tmpfs at %s: %w", dir, err)
	}
	return func() error {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount image tmpfs %s: %w", dir, err)
		}
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("remove image tmpfs dir %s: %w", dir, err)
		}
		return nil
	}, nil
}
