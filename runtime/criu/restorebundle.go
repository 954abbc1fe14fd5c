package criu

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/iorrc/rrc/runtime/criuimage"
	"github.com/iorrc/rrc/runtime/launch"
)

// RestoreBundleConfig says how to prepare a bundle for a `runc restore`
// that another program runs, such as the runc task service of a shim
// (Create with a checkpoint, then Start), which passes runc none of the
// options of our checkpoints: everything goes into the CRIU configuration
// file that runc hands to CRIU (the spec's org.criu.config annotation), and
// CRIU applies that file over runc's own RPC settings.
type RestoreBundleConfig struct {
	// Bundle is the OCI bundle runc restores; its config.json is rewritten
	// (the annotation, and the paths of the UTS/IPC namespaces it makes).
	Bundle string
	// ImagesDir is the checkpoint directory.
	ImagesDir string
	// WorkDir receives the CRIU configuration file, the namespace files and
	// the tmpfs mounts the checkpoint carries, until Release.
	WorkDir string
}

// PreparedRestore is a bundle ready for runc restore; Release it once the
// restore is over (the restored tasks keep what they need).
type PreparedRestore struct {
	criuConfig string
	tmpfs      *restoreTmpfs
	ns         *restoreNamespaces
}

// CRIUConfig is the CRIU configuration file the bundle's spec names.
func (p *PreparedRestore) CRIUConfig() string { return p.criuConfig }

// PrepareRestoreBundle writes the restore's CRIU configuration (TCP
// connections restored, no network lock, cgroup and file-validation modes
// and tmpfs mounts from the checkpoint's manifest), names it in the
// bundle's spec and makes the UTS/IPC namespaces the checkpoint does not
// carry.
//
// Our checkpoints have no network namespace of their own (CRIU dumped from
// inside the container's), so CRIU restores the tasks into its own: runc
// must be started in the namespace the container is to have. CRIU's
// join-ns cannot do it under runc, which always asks CRIU for an empty
// network namespace (--empty-ns net), a combination CRIU refuses.
func PrepareRestoreBundle(cfg RestoreBundleConfig) (*PreparedRestore, error) {
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("restore work dir: %w", err)
	}
	p := &PreparedRestore{}
	var err error
	p.tmpfs, err = prepareRestore(cfg.ImagesDir, cfg.WorkDir, restoreSettings())
	if err == nil {
		p.criuConfig = p.tmpfs.criuConfig
		err = setBundleAnnotation(cfg.Bundle, "org.criu.config", p.criuConfig)
	}
	if err == nil {
		p.ns, err = prepareRestoreNamespaces(cfg.Bundle, cfg.ImagesDir, cfg.WorkDir)
	}
	if err != nil {
		return nil, errors.Join(err, p.Release())
	}
	return p, nil
}

// Release unmounts the host side of the tmpfs mounts and namespace files;
// the restored container's own mounts and namespaces stay.
func (p *PreparedRestore) Release() error {
	if p == nil {
		return nil
	}
	return errors.Join(p.tmpfs.release(), p.ns.release())
}

// restoreSettings are the CRIU settings of every restore of our
// checkpoints. The checkpoints hold established TCP connections, which
// CRIU restores only when told to; they were dumped without a network
// lock (the engine holds packets itself), so there are no lock rules to
// remove, and without "skip" CRIU would run iptables once per connection.
func restoreSettings() []string { return []string{"tcp-established", "network-lock skip"} }

// PrimeRestoredConnections primes the TCP metrics of netns for the peers
// of the checkpoint's connections (PrimeTCPMetrics), so that the restored
// connections retransmit after 200 ms rather than 1-3 s. A failure is
// logged: the restore goes on, its connections then wait for the kernel's
// default timers.
func PrimeRestoredConnections(netns, imagesDir string, log *slog.Logger) {
	start := time.Now()
	conns, err := criuimage.ReadTCPConns(imagesDir)
	if err == nil {
		var n int
		n, err = PrimeTCPMetrics(netns, conns)
		log.Info("TCP metrics primed for the restored connections", "peers", n, "connections", len(conns), "took", time.Since(start))
	}
	if err != nil {
		log.Warn("priming TCP metrics for the restored connections", "err", err)
	}
}

// CRIULogErrors returns the lines of the CRIU log at path that say what went
// wrong, "" if there is none.
func CRIULogErrors(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return launch.Tail(criuErrors(string(b)), 1500)
}
