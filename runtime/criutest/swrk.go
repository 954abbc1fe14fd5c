// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package criutest stands in for `criu swrk` in tests: a test binary
// re-executes itself with a test that calls ServeSwrk, and runtime's CRIU
// client talks to it as it would to CRIU 4.2.1.
package criutest

import (
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"google.golang.org/protobuf/proto"
)

// SwrkOptions shape the fake.
type SwrkOptions struct {
	// Mode is "" (succeed), "fail-before" (fail before the "pre-dump"
	// notification: nothing frozen) or "fail-after" (fail after it, i.e.
	// while the tasks are frozen).
	Mode string
	// StartDelay delays "pre-dump" like CRIU's own start-up.
	StartDelay time.Duration
	// WriteImages makes a successful dump write pages.img into the images
	// directory.
	WriteImages bool
}

// ServeSwrk serves the swrk protocol on file descriptor 3 the way CRIU
// 4.2.1 does: VERSION keeps the session; DUMP sends "pre-dump", waits for
// the answer, replies and exits the process (one dump per process).
func ServeSwrk(o SwrkOptions) {
	sk := os.NewFile(3, "swrk")
	buf := make([]byte, 1<<16)
	send := func(r *rpc.CriuResp) {
		b, _ := proto.Marshal(r)
		if _, err := sk.Write(b); err != nil {
			os.Exit(3) // the caller went away
		}
	}
	for {
		n, err := sk.Read(buf)
		if err != nil || n == 0 {
			os.Exit(0)
		}
		req := &rpc.CriuReq{}
		if err := proto.Unmarshal(buf[:n], req); err != nil {
			os.Exit(2)
		}
		switch req.GetType() {
		case rpc.CriuReqType_VERSION:
			send(&rpc.CriuResp{Type: rpc.CriuReqType_VERSION.Enum(), Success: proto.Bool(true)})
		case rpc.CriuReqType_DUMP:
			// CRIU opens the images directory by name while it starts up,
			// and then writes through it: the directory may be renamed once
			// it has answered, not before.
			time.Sleep(o.StartDelay)
			var images *os.File
			if d := req.GetOpts().GetImagesDir(); d != "" {
				var err error
				if images, err = os.Open(d); err != nil {
					send(&rpc.CriuResp{Type: rpc.CriuReqType_DUMP.Enum(), Success: proto.Bool(false), CrErrno: proto.Int32(2)})
					os.Exit(0)
				}
			}
			if o.Mode == "fail-before" {
				send(&rpc.CriuResp{Type: rpc.CriuReqType_DUMP.Enum(), Success: proto.Bool(false), CrErrno: proto.Int32(1)})
				os.Exit(0)
			}
			send(&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: proto.Bool(true), Notify: &rpc.CriuNotify{Script: proto.String("pre-dump")}})
			n, _ := sk.Read(buf)
			ans := &rpc.CriuReq{}
			if err := proto.Unmarshal(buf[:n], ans); err != nil {
				os.Exit(2) // as for a malformed request
			}
			ok := ans.GetNotifySuccess() && o.Mode != "fail-after"
			if ok && o.WriteImages && images != nil {
				// A dump that could not write its images failed.
				ok = os.WriteFile(filepath.Join("/proc/self/fd", strconv.Itoa(int(images.Fd())), "pages.img"), []byte("state"), 0o600) == nil
			}
			send(&rpc.CriuResp{Type: rpc.CriuReqType_DUMP.Enum(), Success: proto.Bool(ok)})
			os.Exit(0)
		}
	}
}
