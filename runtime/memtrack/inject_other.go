// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

//go:build !amd64

package memtrack

import (
	"context"
	"errors"
	"os"
)

// MakeUffd is implemented for x86_64 only (the register layout and system
// call numbers of the injection are per architecture).
func MakeUffd(ctx context.Context, pid int) (*os.File, error) {
	return nil, errors.New("make userfaultfd in another process: not implemented on this architecture")
}
