// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// TmpfsMount is a tmpfs mount of the container that the checkpoint carries
// itself instead of letting CRIU tar it.
type TmpfsMount struct {
	Destination string `json:"destination"` // mount point in the container
	Key         string `json:"key"`         // CRIU external mount key
	Masked      bool   `json:"masked"`      // a read-only empty masked directory
}

// TmpfsKey is the CRIU external-mount key for a tmpfs at dest. It names a
// file and a directory on the backup and goes into a line of CRIU's
// configuration, so it is always a valid key (checkTmpfsKey): a
// destination with other characters, or a long one, is keyed by its hash.
func TmpfsKey(dest string) string {
	k := "rrc-tmpfs" + strings.ReplaceAll(strings.TrimSuffix(dest, "/"), "/", "-")
	if checkTmpfsKey(k) != nil {
		sum := sha256.Sum256([]byte(dest))
		k = "rrc-tmpfs-" + hex.EncodeToString(sum[:16])
	}
	return k
}

// maxTmpfsKeyLen leaves room for ".tar" in a file name of 255 bytes.
const maxTmpfsKeyLen = 128

// checkTmpfsKey says why k cannot be a tmpfs key: it must be
// "rrc-tmpfs" followed by letters, digits, '.', '_' or '-', at most
// maxTmpfsKeyLen bytes, without "..". Nothing else is safe as a file name
// and as a CRIU configuration line.
func checkTmpfsKey(k string) error {
	rest, ok := strings.CutPrefix(k, "rrc-tmpfs")
	if !ok || len(k) > maxTmpfsKeyLen || strings.Contains(k, "..") {
		return fmt.Errorf("%q is not rrc-tmpfs[A-Za-z0-9._-]* of at most %d bytes without \"..\"", k, maxTmpfsKeyLen)
	}
	for _, c := range []byte(rest) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q has the character %q (allowed: A-Za-z0-9._-)", k, c)
		}
	}
	return nil
}

// TmpfsMounts lists the container's tmpfs mounts: the tmpfs entries of its
// mounts and the masked paths that are directories (runc masks directories
// with an empty read-only tmpfs).
func TmpfsMounts(st *RuncState, rootfsStat func(string) (os.FileInfo, error)) []TmpfsMount {
	if rootfsStat == nil {
		rootfsStat = os.Stat
	}
	var out []TmpfsMount
	for _, m := range st.Config.Mounts {
		if m.Device == "tmpfs" {
			out = append(out, TmpfsMount{Destination: m.Destination, Key: TmpfsKey(m.Destination)})
		}
	}
	for _, p := range st.Config.MaskPaths {
		if fi, err := rootfsStat(p); err == nil && fi.IsDir() {
			out = append(out, TmpfsMount{Destination: p, Key: TmpfsKey(p), Masked: true})
		}
	}
	return out
}

// checkpointManifest is what a restore must know about how a checkpoint
// departs from what `runc checkpoint` writes. Stored as manifestFile.
type checkpointManifest struct {
	// Tmpfs lists the tmpfs mounts the checkpoint carries itself.
	Tmpfs []TmpfsMount `json:"tmpfs,omitempty"`
	// CgroupsIgnored: dumped with --manage-cgroups=ignore, so CRIU must
	// not try to move the tasks into the dumped cgroup paths; runc restore
	// has already put CRIU (and so the tasks) into the new cgroups.
	CgroupsIgnored bool `json:"cgroupsIgnored,omitempty"`
	// FileSizeValidation: dumped with --file-validation=filesize (no
	// build-ids in the images), so the restore validates by size as well.
	FileSizeValidation bool `json:"fileSizeValidation,omitempty"`
}

const manifestFile = "rrc-checkpoint.json"

// tmpfsArchive is the archive of a tmpfs's content in a checkpoint.
func tmpfsArchive(key string) string { return key + ".tar" }

// maxManifestBytes bounds the manifest a restore reads.
const maxManifestBytes = 1 << 20

// decodeManifest parses a manifest, which came from the peer, and checks
// every key and name in it: keys become host paths and lines of CRIU's
// configuration. The error names the field that is wrong.
func decodeManifest(b []byte) (checkpointManifest, error) {
	var m checkpointManifest
	if len(b) > maxManifestBytes {
		return m, fmt.Errorf("%s: %d bytes (at most %d)", manifestFile, len(b), maxManifestBytes)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return checkpointManifest{}, fmt.Errorf("parse %s: %w", manifestFile, err)
	}
	keys := map[string]bool{}
	for i, t := range m.Tmpfs {
		if err := checkTmpfsKey(t.Key); err != nil {
			return checkpointManifest{}, fmt.Errorf("%s: tmpfs[%d].key: %w", manifestFile, i, err)
		}
		if keys[t.Key] {
			return checkpointManifest{}, fmt.Errorf("%s: tmpfs[%d].key: %q twice", manifestFile, i, t.Key)
		}
		keys[t.Key] = true
		if err := checkDestination(t.Destination); err != nil {
			return checkpointManifest{}, fmt.Errorf("%s: tmpfs[%d].destination: %w", manifestFile, i, err)
		}
	}
	return m, nil
}

// checkDestination says why d cannot be a mount point in the container
// (it is only ever printed, but a newline or NUL has no place in one).
func checkDestination(d string) error {
	switch {
	case len(d) == 0 || len(d) > 4096:
		return fmt.Errorf("%d bytes (1 to 4096)", len(d))
	case !strings.HasPrefix(d, "/"):
		return fmt.Errorf("%q is not an absolute path", d)
	case strings.ContainsAny(d, "\x00\n"):
		return fmt.Errorf("%q contains NUL or a newline", d)
	}
	return nil
}

func writeManifest(dir string, m checkpointManifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", manifestFile, err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifestFile), b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", manifestFile, err)
	}
	return nil
}

// captureTmpfs archives the content of the container's writable tmpfs
// mounts, seen through /proc/<pid>/root, into the checkpoint directory. It
// runs while the container is frozen. Masked directories are empty and
// read-only: nothing to capture. It returns the bytes written.
func captureTmpfs(dir string, pid int, mounts []TmpfsMount) (int64, error) {
	var total int64
	for _, m := range mounts {
		if m.Masked {
			continue
		}
		src := fmt.Sprintf("/proc/%d/root%s", pid, m.Destination)
		n, err := writeTreeTar(filepath.Join(dir, tmpfsArchive(m.Key)), src, true)
		if err != nil {
			return total, fmt.Errorf("archive tmpfs %s: %w", m.Destination, err)
		}
		total += n
	}
	return total, nil
}

// restoreTmpfs is what prepareRestore set up.
type restoreTmpfs struct {
	criuConfig string // CRIU configuration file mapping the external mounts
	mounts     []string
}

// prepareRestore writes a CRIU configuration file for what runc restore
// does not know about: settings (one option per line, restoreSettings),
// then what the checkpoint's manifest asks for. runc restore passes that
// file to CRIU when the bundle's config.json carries the annotation
// org.criu.config (runc's handleCriuConfigurationFile), and CRIU applies
// it after runc's RPC settings, so it wins. For each tmpfs mount the
// checkpoint carries it mounts, under dir, a tmpfs filled from its archive
// and maps the mount's external key to it; CRIU then bind-mounts it at its
// place in the container. Release what it returns, also on error.
func prepareRestore(imagesDir, dir string, settings []string) (*restoreTmpfs, error) {
	r := &restoreTmpfs{criuConfig: filepath.Join(dir, "criu-restore.conf")}
	var man checkpointManifest
	b, err := os.ReadFile(filepath.Join(imagesDir, manifestFile))
	switch {
	case os.IsNotExist(err): // a checkpoint of runc's own: nothing to add
	case err != nil:
		return r, fmt.Errorf("read %s: %w", manifestFile, err)
	default:
		if man, err = decodeManifest(b); err != nil {
			return r, err
		}
	}
	var conf strings.Builder
	conf.WriteString("# written by io.rrc.v1 runtime for runc restore, see docs/CHECKPOINT.md\n")
	for _, s := range settings {
		conf.WriteString(s + "\n")
	}
	if man.CgroupsIgnored {
		conf.WriteString("manage-cgroups=ignore\n")
	}
	if man.FileSizeValidation {
		conf.WriteString("file-validation=filesize\n")
	}
	for _, m := range man.Tmpfs {
		target := filepath.Join(dir, m.Key)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return r, fmt.Errorf("prepare tmpfs for %s: %w", m.Destination, err)
		}
		if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID, "mode=755"); err != nil {
			return r, fmt.Errorf("mount tmpfs for %s: %w", m.Destination, err)
		}
		r.mounts = append(r.mounts, target)
		archive := filepath.Join(imagesDir, tmpfsArchive(m.Key))
		if _, err := os.Stat(archive); err == nil {
			if err := extractTreeTar(archive, target); err != nil {
				return r, fmt.Errorf("fill tmpfs for %s: %w", m.Destination, err)
			}
		}
		fmt.Fprintf(&conf, "external mnt[%s]:%s\n", m.Key, target)
	}
	if err := os.WriteFile(r.criuConfig, []byte(conf.String()), 0o600); err != nil {
		return r, fmt.Errorf("write criu restore config: %w", err)
	}
	return r, nil
}

// release unmounts the host side of the tmpfs mounts; the restored
// container's bind mounts keep them alive.
func (r *restoreTmpfs) release() error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, m := range r.mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// setBundleAnnotation sets an annotation in the bundle's config.json.
func setBundleAnnotation(bundle, key, value string) error {
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read bundle config: %w", err)
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("parse bundle config: %w", err)
	}
	ann := map[string]string{}
	if raw, ok := spec["annotations"]; ok {
		if err := json.Unmarshal(raw, &ann); err != nil {
			return fmt.Errorf("parse bundle annotations: %w", err)
		}
	}
	ann[key] = value
	if spec["annotations"], err = json.Marshal(ann); err != nil {
		return err
	}
	if b, err = json.Marshal(spec); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o600)
}
