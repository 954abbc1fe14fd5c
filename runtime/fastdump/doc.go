// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package fastdump captures what changed in a stopped container since the
// previous checkpoint and writes it into a copy of that checkpoint's CRIU
// images, so that a checkpoint costs the pause of what changed instead of a
// whole CRIU dump (docs/FASTDUMP.md: why this route, what is captured how,
// and what makes a checkpoint fall back to CRIU).
//
// It is being built in slices; so far: stopping every thread of a set with
// ptrace (no code runs in the container), each thread's registers, FPU and
// extended state and signal mask patched into CRIU's core image, a
// process's memory written as an incremental dump over the previous image,
// a TCP connection's tcp-stream image and options read through a duplicate
// of its socket and patched into files.img, and a pipe's bytes copied
// without taking them.
// Nothing in the engine uses it yet.
//
// Everything that ptraces must run on one locked OS thread of a process
// that is not a subreaper (a subreaper's reaper would collect the ptrace
// stops); the shim will run it in a helper process, as runtime/memtrack does.
package fastdump
