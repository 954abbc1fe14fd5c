// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ownerRecord sits next to a namespace file in Dir and says who made it and
// what to take away, so that CleanupStale can remove what a crashed shim
// left behind. It is written before the namespace file exists and removed
// after it is gone, so a namespace file without a record is never ours in
// progress.
type ownerRecord struct {
	PID int `json:"pid"`
	// Start is the owner's start time (field 22 of /proc/PID/stat, clock
	// ticks since boot): a reused PID has another one.
	Start uint64 `json:"start"`
	// HostNetns and HostLink name the host end of a veth pair; HostLink
	// is "" for a macvlan (it lives only in the container's namespace).
	// Deleting the container end deletes the pair, so they are needed only
	// when the namespace file is gone but something still holds the
	// namespace.
	HostNetns string `json:"host_netns,omitempty"`
	HostLink  string `json:"host_link,omitempty"`
	// GateNetns is the gate namespace's bind mount (Dir/.gate/<name>).
	GateNetns string `json:"gate_netns,omitempty"`
}

func recordPath(dir, name string) string { return filepath.Join(dir, name+recordSuffix) }

func writeRecord(path string, r ownerRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode owner record: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write owner record: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write owner record: %w", err)
	}
	return nil
}

func readRecord(path string) (ownerRecord, error) {
	var r ownerRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("decode owner record %s: %w", path, err)
	}
	return r, nil
}

// selfOwner is the owner record of this process.
func selfOwner() (ownerRecord, error) {
	start, err := processStart(os.Getpid())
	if err != nil {
		return ownerRecord{}, err
	}
	return ownerRecord{PID: os.Getpid(), Start: start}, nil
}

// alive reports whether the process that wrote r still runs.
func (r ownerRecord) alive() bool {
	if r.PID <= 0 {
		return false
	}
	start, err := processStart(r.PID)
	return err == nil && start == r.Start
}

// processStart reads a process's start time from /proc/PID/stat. Zombies
// count as gone: they hold nothing any more.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm may hold spaces and parentheses: the fields start after the
	// last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 {
		return 0, errors.New("short /proc stat")
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
