// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"time"
)

// ImageManifest resolves the top-level descriptor of l (the only one, see
// Lookup) to a single image manifest: an index is resolved to its entry for
// platform want (or its only entry).
func ImageManifest(l *Layout, want Platform) (Descriptor, Manifest, error) {
	d, err := l.Lookup("")
	if err != nil {
		return d, Manifest{}, err
	}
	for IsIndexType(d.MediaType) {
		idx, err := l.ReadIndex(d.Digest)
		if err != nil {
			return d, Manifest{}, err
		}
		var found *Descriptor
		for i, c := range idx.Manifests {
			if len(idx.Manifests) == 1 || (c.Platform != nil && c.Platform.OS == want.OS && c.Platform.Architecture == want.Architecture) {
				found = &idx.Manifests[i]
				break
			}
		}
		if found == nil {
			return d, Manifest{}, fmt.Errorf("index %s has no manifest for %s", d.Digest, want)
		}
		d = *found
	}
	if !IsManifestType(d.MediaType) {
		return d, Manifest{}, fmt.Errorf("%s: unexpected media type %q", d.Digest, d.MediaType)
	}
	m, err := l.ReadManifest(d.Digest)
	return d, m, err
}

// imageConfig is an image configuration kept as raw JSON fields so that
// fields this package does not know survive a rewrite.
type imageConfig map[string]json.RawMessage

func readConfig(l *Layout, d Descriptor) (imageConfig, error) {
	b, err := l.Blob(d.Digest)
	if err != nil {
		return nil, err
	}
	var c imageConfig
	return c, json.Unmarshal(b, &c)
}

func (c imageConfig) set(k string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	c[k] = b
}

func (c imageConfig) get(k string, v any) error {
	raw, ok := c[k]
	if !ok {
		return nil
	}
	return json.Unmarshal(raw, v)
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

var defaultPlatform = Platform{OS: "linux", Architecture: "amd64"}

// Stack builds a single-platform image whose layers are the layers of the
// given images, bottom first (so a later image's files, and whiteouts, apply
// over an earlier one's). The image configuration (entrypoint, command,
// environment, ...) is taken from images[configFrom]; the root file system
// and the history are the concatenation of all of them.
func Stack(images []*Layout, configFrom int) (*Layout, error) {
	if len(images) == 0 {
		return nil, fmt.Errorf("nothing to stack")
	}
	if configFrom < 0 || configFrom >= len(images) {
		return nil, fmt.Errorf("configFrom %d out of range", configFrom)
	}
	out := NewLayout()
	var (
		layers  []Descriptor
		diffIDs []string
		history []json.RawMessage
		cfg     imageConfig
	)
	for i, img := range images {
		_, m, err := ImageManifest(img, defaultPlatform)
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		c, err := readConfig(img, m.Config)
		if err != nil {
			return nil, fmt.Errorf("image %d: config: %w", i, err)
		}
		var rfs rootFS
		if err := c.get("rootfs", &rfs); err != nil {
			return nil, fmt.Errorf("image %d: rootfs: %w", i, err)
		}
		if len(rfs.DiffIDs) != len(m.Layers) {
			return nil, fmt.Errorf("image %d: %d layers but %d diff_ids", i, len(m.Layers), len(rfs.DiffIDs))
		}
		var h []json.RawMessage
		if err := c.get("history", &h); err != nil {
			return nil, fmt.Errorf("image %d: history: %w", i, err)
		}
		for _, ld := range m.Layers {
			b, err := img.Blob(ld.Digest)
			if err != nil {
				return nil, err
			}
			out.Blobs[ld.Digest] = b
			ld.Annotations = nil
			layers = append(layers, ld)
		}
		diffIDs = append(diffIDs, rfs.DiffIDs...)
		history = append(history, h...)
		if i == configFrom {
			cfg = c
		}
	}
	cfg.set("rootfs", rootFS{Type: "layers", DiffIDs: diffIDs})
	if len(history) > 0 {
		cfg.set("history", history)
	} else {
		delete(cfg, "history")
	}
	cd, err := out.AddJSON(MediaTypeOCIConfig, cfg)
	if err != nil {
		return nil, err
	}
	md, err := out.AddJSON(MediaTypeOCIManifest, Manifest{SchemaVersion: 2, MediaType: MediaTypeOCIManifest, Config: cd, Layers: layers})
	if err != nil {
		return nil, err
	}
	p, err := configPlatform(cfg)
	if err != nil {
		return nil, err
	}
	md.Platform = &p
	out.Index.Manifests = []Descriptor{md}
	return out, nil
}

func configPlatform(c imageConfig) (Platform, error) {
	var p Platform
	if err := c.get("architecture", &p.Architecture); err != nil {
		return p, err
	}
	if err := c.get("os", &p.OS); err != nil {
		return p, err
	}
	if err := c.get("variant", &p.Variant); err != nil {
		return p, err
	}
	if p.OS == "" || p.Architecture == "" {
		return p, fmt.Errorf("image config has no os/architecture")
	}
	return p, nil
}

// MultiPlatform returns an image index holding the (single-platform) image of
// base plus, for each of extra, a synthetic image for that platform: same
// configuration with the platform changed, and one small layer of its own
// holding a file /platform. Those images cannot run; they give tests that
// handle multi-platform content (fetch all platforms, export, usage
// accounting) an index whose other platforms have content distinct from the
// host's.
func MultiPlatform(base *Layout, extra []Platform) (*Layout, error) {
	bd, m, err := ImageManifest(base, defaultPlatform)
	if err != nil {
		return nil, err
	}
	cfg, err := readConfig(base, m.Config)
	if err != nil {
		return nil, err
	}
	bp, err := configPlatform(cfg)
	if err != nil {
		return nil, err
	}
	out := NewLayout()
	if err := base.Walk(bd, func(d Descriptor) error {
		b, err := base.Blob(d.Digest)
		out.Blobs[d.Digest] = b
		return err
	}); err != nil {
		return nil, err
	}
	bd.Platform = &bp
	bd.Annotations = nil
	idx := Index{SchemaVersion: 2, MediaType: MediaTypeOCIIndex, Manifests: []Descriptor{bd}}
	seen := map[string]bool{bp.String(): true}
	for _, p := range extra {
		if seen[p.String()] {
			continue
		}
		seen[p.String()] = true
		layer, diffID, err := platformLayer(p, bd.Digest)
		if err != nil {
			return nil, err
		}
		ld := out.AddBlob(MediaTypeOCILayerGzip, layer)
		c := imageConfig{}
		for k, v := range cfg {
			c[k] = v
		}
		c.set("architecture", p.Architecture)
		c.set("os", p.OS)
		if p.Variant != "" {
			c.set("variant", p.Variant)
		} else {
			delete(c, "variant")
		}
		if p.OSVersion != "" {
			c.set("os.version", p.OSVersion)
		}
		c.set("rootfs", rootFS{Type: "layers", DiffIDs: []string{diffID}})
		c.set("history", []map[string]string{{"created_by": "synthetic layer for " + p.String()}})
		cd, err := out.AddJSON(MediaTypeOCIConfig, c)
		if err != nil {
			return nil, err
		}
		md, err := out.AddJSON(MediaTypeOCIManifest, Manifest{SchemaVersion: 2, MediaType: MediaTypeOCIManifest, Config: cd, Layers: []Descriptor{ld}})
		if err != nil {
			return nil, err
		}
		pp := p
		md.Platform = &pp
		idx.Manifests = append(idx.Manifests, md)
	}
	id, err := out.AddJSON(MediaTypeOCIIndex, idx)
	if err != nil {
		return nil, err
	}
	out.Index.Manifests = []Descriptor{id}
	return out, nil
}

// platformLayer returns a gzip-compressed layer holding /platform, and its
// diff ID. The file names the base image so that two images never share a
// synthetic layer (tests count the content an image holds).
func platformLayer(p Platform, base string) (layer []byte, diffID string, err error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	content := []byte(p.String() + "\nsynthetic variant of " + base + "\n")
	if err := tw.WriteHeader(&tar.Header{Name: "platform", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return nil, "", err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, "", err
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var gb bytes.Buffer
	zw := gzip.NewWriter(&gb)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gb.Bytes(), Digest(tb.Bytes()), nil
}

// SetName names the only top-level entry of l's index.json: containerd's
// image-name annotation gets ref, the OCI ref-name annotation gets its tag.
func SetName(l *Layout, ref string) error {
	if len(l.Index.Manifests) != 1 {
		return fmt.Errorf("layout has %d top-level entries, want 1", len(l.Index.Manifests))
	}
	d := &l.Index.Manifests[0]
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[AnnotationImageName] = ref
	if _, tag, _ := splitRef(ref); tag != "" {
		d.Annotations[AnnotationRefName] = tag
	}
	return nil
}
