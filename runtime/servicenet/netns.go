// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// newNetnsFile makes a new network namespace and bind-mounts it on path
// (which must not exist). It unshares on a locked thread of its own
// goroutine and puts that thread back in its original namespace before
// unlocking it. Why not simply let the runtime discard the thread: when the
// locked thread is the main thread the runtime cannot end it and parks it
// for good, and a parked main thread left in the new namespace would keep
// that namespace alive forever and make /proc/self/ns/net name it.
func newNetnsFile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace file: %w", err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open the thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unshareOwnTCPHash(); err != nil {
			// The thread may be in a namespace of its own by now: back to
			// the original one, or stay locked (not reused).
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			done <- err
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		mountErr := unix.Mount(src, path, "", unix.MS_BIND, "")
		if mountErr != nil {
			mountErr = fmt.Errorf("bind-mount network namespace on %s: %w", path, mountErr)
		}
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread is not reused.
			done <- errors.Join(mountErr, fmt.Errorf("return to the original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		done <- mountErr
	}()
	if err := <-done; err != nil {
		return errors.Join(err, removeNetnsFile(path))
	}
	return nil
}

// tcpHashBuckets is the size of the TCP connection hash table of the
// namespaces newNetnsFile makes. By default a new namespace shares the host's
// table (tcp_ehash_entries, sized by the host's memory), and every listing
// of a namespace's TCP sockets walks all of it: CRIU lists the container's
// TCP sockets, IPv4 and IPv6, at each checkpoint while the container is
// frozen, so the walk is part of the pause (docs/CHECKPOINT.md has the
// figures). A table of its own serves the connections of one container.
const tcpHashBuckets = 4096

// unshareOwnTCPHash moves the calling (locked) thread into a new network
// namespace with a TCP hash table of its own of tcpHashBuckets. The kernel
// (6.1 and later) sizes it from net.ipv4.tcp_child_ehash_entries of the
// namespace the thread unshares from; rather than change that setting for
// the whole host, the thread first unshares into a throwaway namespace,
// sets it there, and unshares again (the throwaway namespace ends as soon
// as the thread has left it). A kernel without the setting gets a namespace
// sharing the host's table, as before.
func unshareOwnTCPHash() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare network namespace: %w", err)
	}
	// /proc/sys/net is the namespace of the thread that opens it.
	err := os.WriteFile("/proc/sys/net/ipv4/tcp_child_ehash_entries", []byte(fmt.Sprint(tcpHashBuckets)), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("size the TCP hash table of a new network namespace: %w", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare network namespace: %w", err)
	}
	return nil
}

// isNsfsMount reports whether path is the mount point of a namespace file.
func isNsfsMount(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// removeNetnsFile unmounts the namespace bind mount at path and removes the
// file; a missing file or mount is not an error. The namespace itself ends
// when nothing else holds it (no process, socket or other mount).
func removeNetnsFile(path string) error {
	for i := 0; i < 8 && isNsfsMount(path); i++ {
		// MNT_DETACH: a process that has the file open (nsenter
		// starting up) must not make the unmount fail.
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount namespace file %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove namespace file %s: %w", path, err)
	}
	return nil
}
