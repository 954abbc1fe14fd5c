// Command containerd-shim-rrc-v1 is the containerd shim v2 of the io.rrc.v1 runtime.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"

	rrcshim "github.com/iorrc/rrc/shim"
)

func main() {
	shim.RunShim(context.Background(), rrcshim.NewManager(rrcshim.RuntimeName))
}
