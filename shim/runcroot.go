// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"path/filepath"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// defaultRuncRoot is the runc shim's process.RuncRoot: the wrapped runc
// service keeps each namespace's containers under <root>/<namespace>.
const defaultRuncRoot = "/run/containerd/runc"

// runcRoot is runc's --root for containers of namespace, as the wrapped runc
// task service computes it (process.NewRunc): options.Root if set, else
// the default, joined with the namespace. The checkpointer must use the
// same root or runc would not find the container.
func runcRoot(namespace string, opts *anypb.Any) string {
	var o *runcoptions.Options
	if opts.GetValue() != nil || opts.GetTypeUrl() != "" {
		if v, err := typeurl.UnmarshalAny(opts); err == nil {
			o, _ = v.(*runcoptions.Options)
		}
	}
	return runcRootOf(namespace, o)
}

// runcRootOf is runcRoot from decoded options (nil: none).
func runcRootOf(namespace string, o *runcoptions.Options) string {
	root := defaultRuncRoot
	if o != nil && o.Root != "" {
		root = o.Root
	}
	return filepath.Join(root, namespace)
}
