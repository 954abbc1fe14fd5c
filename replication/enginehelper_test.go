// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package replication_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/iorrc/rrc/netfilter"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/iorrc/rrc/replication"
	"github.com/iorrc/rrc/replication/peertls"
	"github.com/iorrc/rrc/replication/witness"
	"github.com/iorrc/rrc/runtime/criu"
	"github.com/iorrc/rrc/runtime/criutest"
	"github.com/iorrc/rrc/runtime/servicenet"
	"github.com/iorrc/rrc/shim"
)

// The end-to-end test runs each side's engine in a process of its own,
// inside the lab host's network namespace (nsenter --net), so that `lab.sh
// crash a` kills the primary's engine like the rest of host a. The process
// is this test binary again, told by the environment what to be.
const helperEnv = "RRC_ENGINE_HELPER"

// helperArgs configure one engine process (JSON in helperEnv).
type helperArgs struct {
	Role          replication.Role
	Pair          string
	Peer, Listen  string
	PeerName      string
	CA, Cert, Key string
	ServiceIP     string // CIDR
	ServiceLink   string
	ServicenetDir string
	StatusFile    string
	Epoch         time.Duration
	Mode          replication.Mode
	// primary
	RuncRoot, ContainerID, WorkDir string
	Inject                         *injectArgs          `json:",omitempty"` // fault injection (injector_test.go)
	Memory                         *criu.MemoryTracking `json:",omitempty"` // incremental dumps, as the shim's default
	// backup
	StoreDir, RestoreRuncRoot, RestoreID, RestoreCgroup, RestoreWorkDir string
	// Witness fences the pair with the lab's etcd (fence_lab_test.go).
	Witness *witnessArgs `json:",omitempty"`
}

// witnessArgs name the etcd members and this side's holder name.
type witnessArgs struct {
	Endpoints []string
	Host      string
	TTL       time.Duration
}

// fence dials the witness, if the test asked for one (nil otherwise).
func (h *helper) fence(pair string) (replication.Fence, func(), error) {
	if h.a.Witness == nil {
		return nil, func() {}, nil
	}
	w, err := witness.Dial(witness.Config{Endpoints: h.a.Witness.Endpoints, TTL: h.a.Witness.TTL, Pair: pair,
		Holder: h.a.Witness.Host + " " + string(h.a.Role), Logger: h.log})
	if err != nil {
		return nil, nil, err
	}
	return shim.EtcdFence{Etcd: w}, func() {
		h.cleanup("witness", func() error { return w.Close(context.Background()) })
	}, nil
}

// helperStatus is what an engine process publishes in StatusFile.
type helperStatus struct {
	Phase  string // gated/ready, running, exiting
	Netns  string // the service network namespace
	Engine replication.Status
	Error  string `json:",omitempty"`
}

// backupGo is the backup's second input: what it needs to restore.
type backupGo struct {
	SpecFile string
	Lower    []string
}

func TestMain(m *testing.M) {
	if a := os.Getenv(helperEnv); a != "" {
		os.Exit(runHelper(a))
	}
	if mode := os.Getenv(fakeCRIUEnv); mode != "" {
		fakeCRIUMain(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeCRIUEnv makes this test binary act as `criu swrk 3` (one DUMP per
// process, like CRIU 4.2.1), the CRIU of newFakeCheckpointer. Its value:
// "ok"; "fail-before" (fails before "pre-dump"); "fail-after" (fails after
// it, i.e. while frozen). RRC_FAKE_CRIU_START_MS delays "pre-dump" like
// CRIU's start-up. A successful dump writes pages.img into the images
// directory.
const fakeCRIUEnv = "RRC_FAKE_CRIU_REPL"

func fakeCRIUMain(mode string) {
	ms, _ := strconv.Atoi(os.Getenv("RRC_FAKE_CRIU_START_MS"))
	criutest.ServeSwrk(criutest.SwrkOptions{Mode: mode, StartDelay: time.Duration(ms) * time.Millisecond, WriteImages: true})
}

func runHelper(arg string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var a helperArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		log.Error("helper args", "err", err)
		return 2
	}
	log = log.With("helper", string(a.Role))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	h := &helper{a: a, log: log, stdin: bufio.NewScanner(os.Stdin)}
	var err error
	if a.Role == replication.RolePrimary {
		err = h.primary(ctx)
	} else {
		err = h.backup(ctx)
	}
	if err != nil {
		log.Error("helper failed", "err", err)
		h.publish("exiting", "", replication.Status{}, err)
		return 1
	}
	return 0
}

type helper struct {
	a     helperArgs
	log   *slog.Logger
	stdin *bufio.Scanner
}

// cleanup runs a deferred clean-up of the engine process and logs its
// failure, which the test sees as leftovers.
func (h *helper) cleanup(what string, f func() error) {
	if err := f(); err != nil {
		h.log.Error("clean-up failed", "what", what, "err", err)
	}
}

func (h *helper) publish(phase, netns string, st replication.Status, err error) {
	s := helperStatus{Phase: phase, Netns: netns, Engine: st}
	if err != nil {
		s.Error = err.Error()
	}
	b, _ := json.Marshal(s)
	tmp := h.a.StatusFile + ".tmp"
	werr := os.WriteFile(tmp, b, 0o600)
	if werr == nil {
		werr = os.Rename(tmp, h.a.StatusFile)
	}
	if werr != nil {
		// The test waiting for this status times out; say why.
		h.log.Error("publish status", "phase", phase, "err", werr)
	}
}

// readLine waits for the test's next line; EOF (the test went away) ends
// the helper like a signal.
func (h *helper) readLine(ctx context.Context) (string, bool) {
	line := make(chan string, 1)
	go func() {
		if h.stdin.Scan() {
			line <- h.stdin.Text()
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		return l, ok
	case <-ctx.Done():
		return "", false
	}
}

func (h *helper) config() (replication.Config, error) {
	ip, ipnet, err := net.ParseCIDR(h.a.ServiceIP)
	if err != nil {
		return replication.Config{}, err
	}
	ipnet.IP = ip
	return replication.Config{Role: h.a.Role, Pair: h.a.Pair, Peer: h.a.Peer, Listen: h.a.Listen, PeerName: h.a.PeerName,
		Epoch: h.a.Epoch, Mode: h.a.Mode, Service: &servicenet.Settings{Address: ipnet, Link: h.a.ServiceLink}}.WithDefaults(), nil
}

// serviceNetwork creates this host's service network namespace (active on
// the primary, standby on the backup), as the shim will.
func (h *helper) serviceNetwork(ctx context.Context, cfg replication.Config) (*servicenet.ServiceNetwork, error) {
	return servicenet.Create(ctx, h.a.Pair, *cfg.Service, h.a.Role == replication.RoleBackup,
		servicenet.Options{Dir: h.a.ServicenetDir, Logger: h.log})
}

// runUntilDone publishes status every 50 ms until ctx ends or stdin closes.
func (h *helper) runUntilDone(ctx context.Context, netns string, status func() replication.Status) {
	eof := make(chan struct{})
	go func() {
		h.readLine(ctx)
		close(eof)
	}()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		h.publish("running", netns, status(), nil)
		select {
		case <-ctx.Done():
			return
		case <-eof:
			return
		case <-t.C:
		}
	}
}

// pairSetup is what both sides need first: settings, TLS credentials and
// the service network (to be removed by the caller).
func (h *helper) pairSetup(ctx context.Context) (replication.Config, *peertls.Credentials, *servicenet.ServiceNetwork, error) {
	cfg, err := h.config()
	if err != nil {
		return cfg, nil, nil, err
	}
	creds, err := peertls.Load(h.a.CA, h.a.Cert, h.a.Key)
	if err != nil {
		return cfg, nil, nil, err
	}
	sn, err := h.serviceNetwork(ctx, cfg)
	return cfg, creds, sn, err
}

func (h *helper) primary(ctx context.Context) error {
	cfg, creds, sn, err := h.pairSetup(ctx)
	if err != nil {
		return err
	}
	defer h.cleanup("service network", func() error { return sn.Remove(context.Background()) })
	unmount, err := criu.MountImageTmpfs(h.a.WorkDir, 1<<30)
	if err != nil {
		return err
	}
	defer h.cleanup("image tmpfs", unmount)
	packets := &netfilter.Path{NetNS: sn.NetnsPath(), Logger: h.log.With("pair", cfg.Pair)}
	if g, ok := sn.Gate(); ok {
		packets.Forward = &netfilter.Forward{NetNS: g.NetNS, Inner: g.InnerIf, Uplink: g.Uplink}
	}
	fence, closeFence, err := h.fence(cfg.Pair)
	if err != nil {
		return err
	}
	defer closeFence()
	opts := replication.PrimaryOptions{
		Config: cfg, TLS: creds, WorkDir: filepath.Join(h.a.WorkDir, "epochs"), Logger: h.log,
		Packets: replication.NetfilterPath(packets), Fence: fence,
	}
	var inj *injector
	if h.a.Inject != nil {
		if inj, err = newInjector(*h.a.Inject, h.log); err != nil {
			return err
		}
		opts.Dial = inj.dial(cfg.Peer, creds)
	}
	p, err := replication.NewPrimary(ctx, opts)
	if err != nil {
		return err
	}
	defer p.Close(context.Background())
	h.publish("gated", sn.NetnsPath(), p.Status(), nil)
	if _, ok := h.readLine(ctx); !ok { // the container runs
		return nil
	}
	// As the shim does: CRIU in the service namespace, each dump prepared
	// after the last one.
	c, err := criu.NewCheckpointer(ctx, criu.CheckpointerConfig{
		RuncRoot: h.a.RuncRoot, ID: h.a.ContainerID, Dump: criu.FastDumpOptions(),
		CRIU:              criu.CRIUCommand{NetNS: sn.NetnsPath()},
		CaptureRootfsDiff: true, PrepareNext: true, Memory: h.a.Memory, Log: h.log.With("pair", cfg.Pair),
	})
	if err != nil {
		return err
	}
	var ck replication.Checkpointer = c
	if inj != nil {
		ck = inj.checkpointer(c)
	}
	if err := p.Start(ctx, ck); err != nil {
		c.Close()
		return err
	}
	h.runUntilDone(ctx, sn.NetnsPath(), p.Status)
	// Close must leave nothing behind; an error fails the helper's exit
	// status, which the test checks.
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Close(cctx)
}

func (h *helper) backup(ctx context.Context) error {
	cfg, creds, sn, err := h.pairSetup(ctx)
	if err != nil {
		return err
	}
	defer h.cleanup("service network", func() error { return sn.Remove(context.Background()) })
	h.publish("ready", sn.NetnsPath(), replication.Status{}, nil)
	line, ok := h.readLine(ctx)
	if !ok {
		return nil
	}
	var g backupGo
	if err := json.Unmarshal([]byte(line), &g); err != nil {
		return fmt.Errorf("backup input: %w", err)
	}
	spec, err := os.ReadFile(g.SpecFile)
	if err != nil {
		return err
	}
	restorer := &shim.RuncRestorer{
		RuncRoot: h.a.RestoreRuncRoot, ID: h.a.RestoreID, Spec: spec, Lower: g.Lower,
		CgroupsPath: h.a.RestoreCgroup, WorkDir: h.a.RestoreWorkDir,
		RuncArgv: []string{"nsenter", "--net=" + sn.NetnsPath(), "--", "runc"},
		NetNS:    sn.NetnsPath(),
	}
	defer h.cleanup("restored container", func() error { return restorer.Remove(context.Background()) })
	standby := servicenet.StandbyService{NetNS: sn.NetnsPath(), Prefix: cfg.Service.Address, Up: func(ctx context.Context) error {
		_, err := sn.Promote(ctx)
		return err
	}}
	var network replication.ServicePromoter = standby
	hybrid := cfg.Mode == replication.ModeHybrid
	hold := &netfilter.Path{Logger: h.log.With("pair", cfg.Pair), WholePackets: hybrid}
	gate, input, ok, err := shim.OpenPromotionHold(ctx, sn, hold)
	if err != nil {
		return err
	}
	if ok {
		defer h.cleanup("promotion hold", func() error { return hold.Close(context.Background()) })
		held := shim.HeldStandby{StandbyService: standby, SN: sn, Gate: gate}
		network = held
		if hybrid {
			links, err := sn.OpenReplayLinks()
			if err != nil {
				return err
			}
			network = shim.ReplayStandby{HeldStandby: held, Input: input, Links: links}
		}
	}
	fence, closeFence, err := h.fence(cfg.Pair)
	if err != nil {
		return err
	}
	defer closeFence()
	b, err := replication.StartBackup(ctx, replication.BackupOptions{
		Config: cfg, TLS: creds, StoreDir: h.a.StoreDir, Restorer: restorer, Logger: h.log,
		Network: network, Fence: fence,
	})
	if err != nil {
		return err
	}
	defer b.Close(context.Background())
	h.runUntilDone(ctx, sn.NetnsPath(), b.Status)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(cctx); err != nil {
		return err
	}
	return restorer.Remove(cctx)
}
