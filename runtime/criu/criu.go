// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/iorrc/rrc/runtime/launch"
)

// CRIUCommand says how to start CRIU. Argv is the command line up to and
// excluding "swrk" (default ["criu"]); it may be prefixed with e.g.
// "nsenter --net=PATH" so that CRIU runs in the container's network
// namespace: CRIU dumps a network namespace that differs from its own, and
// with --net-host the container's namespace is the host's, not ours.
type CRIUCommand struct {
	Argv     []string
	Launcher launch.Launcher
	// NetNS, if set, is the container's network namespace (a path), which
	// CRIU is started in (through nsenter). CRIU then takes it for its own,
	// the host's, and does not dump it: no namespace, link or conntrack
	// images, and no walk of the kernel's whole conntrack hash table (twice,
	// inside the pause; docs/CHECKPOINT.md). The namespace is
	// the environment the service network gives the container on both
	// hosts; the restore runs in the backup's one (RestoreConfig.RuncArgv).
	NetNS string
	// UTSNS and IPCNS, if set, are the container's UTS and IPC namespaces,
	// which CRIU is started in too: it does not dump them then (one forked
	// child each, inside the pause). The restore recreates them
	// (Restore); see Checkpointer for when the IPC namespace must be dumped.
	UTSNS, IPCNS string
	// Nice, if not 0, is set as the CRIU process's nice value right after
	// it starts (before it serves a dump). The pause is CRIU's CPU time; on
	// a busy host a raised priority (e.g. -10) keeps it from queueing behind
	// other work (docs/CHECKPOINT.md, runs A–C).
	Nice int
	// Env is added to CRIU's environment (e.g. LD_PRELOAD of the
	// criu-written library for incremental memory dumps).
	Env []string
	// FreezeNotify says that the criu-written library is preloaded (Env):
	// a dump then sends FreezeNotifyScript right before CRIU reads the
	// freezer's state, and the freeze belongs there (Checkpointer).
	FreezeNotify bool
}

// FreezeNotifyScript is the notification the criu-written library sends
// (CRIUCommand.FreezeNotify) when CRIU is about to seize the tasks.
const FreezeNotifyScript = "rrc-freeze"

// swrkFd is the descriptor number of the RPC socket in `criu swrk`.
const swrkFd = 3

func (c CRIUCommand) argv() []string {
	argv := c.Argv
	if len(argv) == 0 {
		argv = []string{"criu"}
	}
	enter := []string{"nsenter"}
	for _, ns := range []struct{ flag, path string }{{"--net=", c.NetNS}, {"--uts=", c.UTSNS}, {"--ipc=", c.IPCNS}} {
		if ns.path != "" {
			enter = append(enter, ns.flag+ns.path)
		}
	}
	if len(enter) > 1 {
		argv = append(append(enter, "--"), argv...)
	}
	return argv
}

func (c CRIUCommand) launcher() launch.Launcher {
	if c.Launcher == nil {
		return launch.OS{}
	}
	return c.Launcher
}

// swrk is one `criu swrk` service process, spoken to over a SOCK_SEQPACKET
// socket pair with protobuf requests (what go-criu does; we start the
// process ourselves so that the shim's reaper can own it).
type swrk struct {
	sock   *os.File
	wait   func() (int, error)
	proc   *os.Process
	buf    []byte // for responses
	pid    int
	closed bool
}

// startSwrk starts a CRIU service process. go-criu's Prepare uses os/exec
// directly, which is not reaper-safe, hence this.
func startSwrk(c CRIUCommand) (*swrk, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair for criu swrk: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "criu-swrk-client")
	theirs := os.NewFile(uintptr(fds[1]), "criu-swrk-server")
	defer theirs.Close()
	argv := append(append([]string{}, c.argv()...), "swrk", strconv.Itoa(swrkFd))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	if len(c.Env) > 0 || c.FreezeNotify {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	if c.FreezeNotify {
		cmd.Env = append(cmd.Env, fmt.Sprintf("RRC_FREEZE_NOTIFY_FD=%d", swrkFd))
	}
	// CRIU writes to stderr only before its log file is set up, and when its
	// socket closes ("Can't recv request"); keep it out of the shim's output.
	cmd.Stderr = nil
	// Own process group: a terminal's ^C goes to us, and we end CRIU.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	wait, err := c.launcher().Start(cmd)
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("start criu swrk: %w", err)
	}
	sw := &swrk{sock: ours, wait: wait, proc: cmd.Process, pid: cmd.Process.Pid}
	if c.Nice != 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, sw.pid, c.Nice); err != nil {
			sw.close()
			return nil, fmt.Errorf("set nice %d of criu swrk: %w", c.Nice, err)
		}
	}
	return sw, nil
}

// call sends one request and answers CRIU's notifications ("pre-dump",
// "network-lock", ...) with success until the final response arrives.
// onNotify, if set, is called for each notification before answering; an
// error from it is answered as a failure, which makes CRIU abort.
func (s *swrk) call(req *rpc.CriuReq, onNotify func(script string) error) (*rpc.CriuResp, error) {
	if err := s.send(req); err != nil {
		return nil, err
	}
	resp, err := s.recv(req.GetType())
	if err != nil {
		return nil, err
	}
	return s.answer(resp, onNotify)
}

func (s *swrk) send(req *rpc.CriuReq) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("marshal criu request: %w", err)
	}
	if _, err := s.sock.Write(b); err != nil {
		return fmt.Errorf("send criu %s request: %w", req.GetType(), err)
	}
	return nil
}

func (s *swrk) recv(what rpc.CriuReqType) (*rpc.CriuResp, error) {
	if s.buf == nil {
		s.buf = make([]byte, 64<<10)
	}
	n, err := s.sock.Read(s.buf)
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("read criu %s response: %w", what, err)
	}
	resp := &rpc.CriuResp{}
	if err := proto.Unmarshal(s.buf[:n], resp); err != nil {
		return nil, fmt.Errorf("unmarshal criu response: %w", err)
	}
	return resp, nil
}

// answer goes on from resp, a response to a request: notifications are
// answered until the final response.
func (s *swrk) answer(resp *rpc.CriuResp, onNotify func(script string) error) (*rpc.CriuResp, error) {
	var notifyErr error
	for {
		if !resp.GetSuccess() {
			err := fmt.Errorf("criu %s failed: errno %d %s", resp.GetType(), resp.GetCrErrno(), resp.GetCrErrmsg())
			return resp, errors.Join(notifyErr, err)
		}
		if resp.GetType() != rpc.CriuReqType_NOTIFY {
			return resp, nil
		}
		ok := true
		if onNotify != nil {
			if err := onNotify(resp.GetNotify().GetScript()); err != nil {
				ok = false
				notifyErr = err
			}
		}
		if err := s.send(&rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: proto.Bool(ok)}); err != nil {
			return nil, err
		}
		var err error
		if resp, err = s.recv(rpc.CriuReqType_NOTIFY); err != nil {
			return nil, err
		}
	}
}

// close ends the service process: CRIU exits when its socket closes.
func (s *swrk) close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.sock.Close()
	// The exit status says nothing useful: CRIU exits non-zero when its
	// socket is closed on it, and a spare may have been killed with its host.
	if _, err := s.wait(); err != nil {
		return fmt.Errorf("wait for criu swrk %d: %w", s.pid, err)
	}
	return nil
}

// CRIUService hands out CRIU service processes so that no checkpoint waits
// for a CRIU process to start (through the criu wrapper's dynamic loader,
// where there is one).
//
// CRIU 4.2.1's swrk serves one dump per process (measured here): after a
// DUMP the process exits, and a DUMP request with keep_open set makes it exit
// with status 255 before dumping anything. So the service keeps one spare
// process started ahead of time: each dump takes the spare and a replacement
// is started in the background as soon as the dump is asked for (Prepare),
// so that with prepared dumps it is ready when the next one is asked for.
// (The start-up of CRIU proper — kernel probing, uncached unless the
// criu-written library keeps CRIU's cache: MemoryTracking.KernelCache —
// happens per request, and Checkpointer keeps it out of the pause by
// freezing only on CRIU's "pre-dump" notification, and with PrepareNext out
// of the checkpoint's time too, by asking for each dump ahead.)
type CRIUService struct {
	cmd CRIUCommand
	log *slog.Logger

	mu     sync.Mutex
	spare  *swrk
	ready  chan struct{} // closed when the spare being started is ready
	err    error         // error of the last background start
	closed bool
}

// NewCRIUService starts the first spare CRIU process.
func NewCRIUService(cmd CRIUCommand, log *slog.Logger) (*CRIUService, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &CRIUService{cmd: cmd, log: log}
	sw, err := startSwrk(cmd)
	if err != nil {
		return nil, err
	}
	// A VERSION request both checks that the binary works and waits until the
	// process has finished its start-up (dynamic loading, parsing).
	if _, err := sw.call(&rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum(), KeepOpen: proto.Bool(true)}, nil); err != nil {
		sw.close()
		return nil, fmt.Errorf("check criu swrk: %w", err)
	}
	s.spare = sw
	return s, nil
}

// take returns a ready service process and starts its replacement.
func (s *CRIUService) take(ctx context.Context) (*swrk, error) {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if ready != nil {
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("criu service closed")
	}
	sw := s.spare
	s.spare = nil
	if sw == nil {
		// The background start failed; try once more in the foreground.
		var err error
		if sw, err = startSwrk(s.cmd); err != nil {
			return nil, fmt.Errorf("start criu swrk (previous start: %v): %w", s.err, err)
		}
	}
	return sw, nil
}

// replenish starts the next spare in the background.
func (s *CRIUService) replenish() {
	s.mu.Lock()
	if s.closed || s.spare != nil || (s.ready != nil && !isClosed(s.ready)) {
		s.mu.Unlock()
		return
	}
	ready := make(chan struct{})
	s.ready = ready
	s.mu.Unlock()
	go func() {
		defer close(ready)
		sw, err := startSwrk(s.cmd)
		if err == nil {
			_, err = sw.call(&rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum(), KeepOpen: proto.Bool(true)}, nil)
			if err != nil {
				sw.close()
				sw = nil
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.err = err
		if err != nil {
			s.log.Warn("start spare criu swrk", "err", err)
			return
		}
		if s.closed {
			go sw.close()
			return
		}
		s.spare = sw
	}()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Dump runs one CRIU dump with opts on a ready service process.
// afterDump, if set, runs as soon as CRIU has answered (e.g. the thaw), before
// the used process is reaped and its replacement started.
func (s *CRIUService) Dump(ctx context.Context, opts *rpc.CriuOpts, onNotify func(string) error, afterDump func(dumpErr error)) (*rpc.CriuResp, error) {
	d, err := s.Prepare(ctx, opts)
	if err != nil {
		return nil, err
	}
	return d.Run(ctx, onNotify, afterDump)
}

// PreparedDump is a dump CRIU has been asked for and is starting up for
// (kernel feature probing unless cached, vDSO and cgroup parsing) while the
// container runs; it
// stops at its "pre-dump" notification, before it touches any task, until
// Run answers it. Exactly one of Run or Cancel must follow.
type PreparedDump struct {
	s     *CRIUService
	sw    *swrk
	ready chan struct{} // closed when CRIU's first answer (or error) is in
	first *rpc.CriuResp
	err   error
}

// Ready is closed once CRIU has answered the request for the first time
// (normally "pre-dump"): it has opened the images directory by then, which
// may be renamed from that moment on, not before.
func (d *PreparedDump) Ready() <-chan struct{} { return d.ready }

// Prepare sends the DUMP request to a ready service process now.
func (s *CRIUService) Prepare(ctx context.Context, opts *rpc.CriuOpts) (*PreparedDump, error) {
	sw, err := s.take(ctx)
	if err != nil {
		return nil, err
	}
	if err := sw.send(&rpc.CriuReq{Type: rpc.CriuReqType_DUMP.Enum(), Opts: opts}); err != nil {
		sw.close()
		s.replenish()
		return nil, fmt.Errorf("criu dump: %w", err)
	}
	d := &PreparedDump{s: s, sw: sw, ready: make(chan struct{})}
	go func() {
		d.first, d.err = sw.recv(rpc.CriuReqType_DUMP)
		close(d.ready)
	}()
	// The next spare starts now, while this dump waits to be run, so that
	// the dump after it can be asked for as soon as this one is over.
	s.replenish()
	return d, nil
}

// Run goes on with the dump as Dump does.
func (d *PreparedDump) Run(ctx context.Context, onNotify func(string) error, afterDump func(dumpErr error)) (*rpc.CriuResp, error) {
	sw := d.sw
	// The socket is blocking; a cancelled ctx ends CRIU, which ends the read.
	// Kill fails only once CRIU has exited, which ends the read anyway.
	stop := context.AfterFunc(ctx, func() { _ = sw.proc.Kill() })
	<-d.ready
	resp, err := d.first, d.err
	if err == nil {
		resp, err = sw.answer(resp, onNotify)
	}
	stop()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", err, ctx.Err())
	}
	if afterDump != nil {
		afterDump(err)
	}
	if cerr := sw.close(); cerr != nil && err == nil {
		d.s.log.Debug("criu swrk after dump", "err", cerr)
	}
	d.s.replenish()
	if err != nil {
		return resp, fmt.Errorf("criu dump: %w", err)
	}
	return resp, nil
}

// Cancel ends a prepared dump that will not be run. CRIU has not touched
// the container: it is ended where it waits, before seizing anything.
func (d *PreparedDump) Cancel() {
	_ = d.sw.proc.Kill() // fails only if CRIU has exited already
	<-d.ready
	d.sw.close()
	d.s.replenish()
}

// Close ends the spare CRIU process, waiting for a start in progress.
func (s *CRIUService) Close() error {
	s.mu.Lock()
	s.closed = true
	ready := s.ready
	s.mu.Unlock()
	if ready != nil {
		<-ready
	}
	s.mu.Lock()
	sw := s.spare
	s.spare = nil
	s.mu.Unlock()
	if sw != nil {
		return sw.close()
	}
	return nil
}
