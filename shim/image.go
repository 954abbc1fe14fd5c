// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// imageDigest asks containerd (its gRPC address) which image container id of
// namespace ns was made from and returns that image's digest; "" when the
// container has no image (a root file system given as is). Both sides of a
// pair must run the same: the backup restores the primary's memory onto its
// own copy of the files.
func imageDigest(ctx context.Context, address, ns, id string) (string, error) {
	if address == "" {
		return "", errors.New("the shim was not given containerd's address")
	}
	client, err := containerd.New(address, containerd.WithDefaultNamespace(ns), containerd.WithTimeout(5*time.Second))
	if err != nil {
		return "", fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.ContainerService().Get(ctx, id)
	if err != nil {
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	if c.Image == "" {
		return "", nil
	}
	img, err := client.ImageService().Get(ctx, c.Image)
	if err != nil {
		return "", fmt.Errorf("image %s of container %s: %w", c.Image, id, err)
	}
	return img.Target.Digest.String(), nil
}
