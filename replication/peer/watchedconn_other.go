// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

//go:build !linux

package peer

import "time"

func (c *watchedConn) unread() (int, bool) { return 0, false }

func (c *watchedConn) peerKernelSilence() (time.Duration, bool) { return 0, false }
