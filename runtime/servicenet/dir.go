package servicenet

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// prepareDir makes dir and turns it into a shared bind mount of itself,
// as iproute2 does for /run/netns. Why: a process that makes a new mount
// namespace (unshare -m, ip netns exec) copies every mount, our namespace
// binds included; with a private parent those copies would keep the network
// namespace (and its service interface, still answering ARP) alive after
// Remove. Under a shared mount the copies are peers, and Remove's unmount
// propagates to them.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make directory %s: %w", dir, err)
	}
	mounted, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// ReleaseDir undoes what Create did to dir itself (its shared bind mount)
// once no namespace is mounted under it; it fails with the leftovers named
// otherwise. The directory stays. Callers that own dir call it when the last
// container using it is gone (a test, an uninstall).
func ReleaseDir(dir string) error {
	dir = filepath.Clean(dir)
	mps, err := mountPointsUnder(dir)
	if err != nil {
		return err
	}
	var busy []string
	self := false
	for _, mp := range mps {
		if mp == dir {
			self = true
		} else {
			busy = append(busy, mp)
		}
	}
	if len(busy) > 0 {
		return fmt.Errorf("release %s: still mounted under it: %s", dir, strings.Join(busy, ", "))
	}
	if self {
		// No MNT_DETACH: if a namespace was mounted under dir meanwhile
		// the unmount fails (EBUSY) instead of hiding it.
		for {
			if err := unix.Unmount(dir, 0); err != nil {
				if errors.Is(err, unix.EINVAL) {
					break // no longer a mount point
				}
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			if m, err := isMountPoint(dir); err != nil || !m {
				return err
			}
		}
	}
	return nil
}

func isMountPoint(path string) (bool, error) {
	mps, err := mountPointsUnder(path)
	if err != nil {
		return false, err
	}
	for _, mp := range mps {
		if mp == path {
			return true, nil
		}
	}
	return false, nil
}

// mountPointsUnder lists the mount points at or under dir, from
// /proc/self/mountinfo.
func mountPointsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for space) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
