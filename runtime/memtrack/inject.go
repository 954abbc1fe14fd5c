// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package memtrack

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrSeccomp is wrapped by the errors of MakeUffd and Take for a process
// with a seccomp filter that could not be suspended while it is injected
// into (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN and a kernel with
// CONFIG_CHECKPOINT_RESTORE): the filter could kill it (or make it fail
// strangely) for the injected system calls, so it is left alone.
var ErrSeccomp = errors.New("process has a seccomp filter")

// targetStatus is what MakeUffd needs from /proc/PID/status.
type targetStatus struct {
	Tgid    int
	Seccomp int // 0 none, 1 strict, 2 filter
}

// parseStatus parses the Tgid and Seccomp lines of /proc/PID/status.
func parseStatus(b []byte) (targetStatus, error) {
	st := targetStatus{Tgid: -1, Seccomp: -1}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int
		switch key {
		case "Tgid":
			dst = &st.Tgid
		case "Seccomp":
			dst = &st.Seccomp
		default:
			continue
		}
		v, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return st, fmt.Errorf("parse status line %q: %w", sc.Text(), err)
		}
		*dst = v
	}
	if st.Tgid < 0 {
		return st, errors.New("parse status: no Tgid line")
	}
	if st.Seccomp < 0 {
		// Kernels without CONFIG_SECCOMP have no Seccomp line.
		st.Seccomp = 0
	}
	return st, nil
}

// checkTarget refuses a pid that is not a thread-group leader, and says
// whether its main thread has a seccomp mode.
func checkTarget(pid int) (seccomp bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	st, err := parseStatus(b)
	if err != nil {
		return false, err
	}
	if st.Tgid != pid {
		return false, fmt.Errorf("not a process but a thread of process %d", st.Tgid)
	}
	return st.Seccomp != 0, nil
}

// findSyscallInsn returns the address of a syscall instruction (0f 05) in
// pid's vDSO, read through /proc/PID/mem. Any occurrence of the two bytes
// will do, on an instruction boundary or not: the target jumps straight to
// it.
func findSyscallInsn(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, err
	}
	maps, err := parseMaps(bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	vdso, ok := findMapping(maps, "[vdso]")
	if !ok {
		return 0, fmt.Errorf("%d has no vDSO", pid)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return 0, err
	}
	defer mem.Close()
	code := make([]byte, vdso.End-vdso.Start)
	if _, err := mem.ReadAt(code, int64(vdso.Start)); err != nil {
		return 0, fmt.Errorf("read vDSO of %d: %w", pid, err)
	}
	i := bytes.Index(code, []byte{0x0f, 0x05})
	if i < 0 {
		return 0, fmt.Errorf("no syscall instruction in the vDSO of %d", pid)
	}
	return vdso.Start + uint64(i), nil
}
