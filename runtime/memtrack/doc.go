// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package memtrack tracks which pages of a process were written since the
// last checkpoint, without soft-dirty bits (CONFIG_MEM_SOFT_DIRTY is off on
// the project's kernels, so CRIU would copy all memory every epoch).
//
// It uses userfaultfd write-protection in asynchronous mode
// (UFFD_FEATURE_WP_ASYNC, Linux 6.7+): the kernel resolves a write to a
// write-protected page itself, by clearing the page's uffd-wp bit, and the
// PAGEMAP_SCAN ioctl on /proc/PID/pagemap reports pages without the bit as
// PAGE_IS_WRITTEN and can write-protect them again in the same walk. No fault
// reaches user space.
//
// # Getting the userfaultfd
//
// A userfaultfd tracks the address space of the process that created it, so
// it has to be made inside the target. Take runs the helper rrc-uffd (a
// separate process: the shim is a subreaper whose reaper would steal the
// ptrace stop notifications), which seizes the target's main thread with
// ptrace, makes it execute userfaultfd(2) through a syscall instruction of its
// vDSO, copies the new descriptor out with pidfd_getfd(2), makes the target
// close its own copy (CRIU cannot dump a userfaultfd), restores the
// registers (restarting an interrupted system call the way the kernel would
// have) and hands the descriptor back over a unix socket. MakeUffd is that
// injection; a seccomp filter of the target is suspended meanwhile
// (PTRACE_O_SUSPEND_SECCOMP), as it could kill the target for the injected
// system calls.
//
// # Tracking
//
//	uffd, err := memtrack.Take(ctx, []string{"rrc-uffd"}, launcher, pid)
//	t, err := memtrack.Attach(pid, uffd) // every page counts as written
//	// each epoch, with the container frozen:
//	//   dump (CRIU reads the written bits), then
//	pages, err := t.Reset() // write-protect what was written
//	// between epochs, with the container running:
//	n, err := t.Register() // mappings that appeared since
//
// Private mappings are registered (anonymous memory and the copied-on-write
// pages of private file mappings), shared ones are not. Pages of mappings
// that are not registered (shared ones, mappings made since the last
// Register, mappings moved by mremap, which drops the registration) always
// count as written. A zapped page of a file mapping keeps a uffd-wp marker,
// which the pagemap reports as swapped and not written: readers must count
// only present pages as possibly clean (criu-written does). The tracking lasts as long as the Tracker's copy
// of the userfaultfd is open; Close ends it and the kernel unregisters the
// mappings.
//
// A Tracker belongs to one address space. When the process exits, or execs
// (its address space is replaced), or its pid is reused, the Tracker's
// methods return an error wrapping ErrProcessChanged and the caller drops it
// (and takes a new userfaultfd if the process is still there).
package memtrack
