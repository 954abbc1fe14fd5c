// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package suite pins the containerd module whose integration/client tests
// test/integration/run.sh runs against io.rrc.v1. It is a separate module so
// that the test-only dependencies of containerd's integration tests do not
// enter the main module's go.mod. The containerd version must equal the one
// in the main module's go.mod (run.sh checks it).
package suite

import (
	_ "github.com/containerd/containerd/v2/integration/client"
)
