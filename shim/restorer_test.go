// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"strings"
	"testing"
)

func TestLowerDirsFromMountOptions(t *testing.T) {
	lower, err := LowerDirsFromMountOptions("index=off,workdir=/s/3/work,upperdir=/s/3/fs,lowerdir=/s/2/fs:/s/1/fs")
	if err != nil || strings.Join(lower, ":") != "/s/2/fs:/s/1/fs" {
		t.Errorf("lower %v, %v", lower, err)
	}
	if _, err := LowerDirsFromMountOptions("rbind,ro"); err == nil {
		t.Error("no lowerdir accepted")
	}
}
