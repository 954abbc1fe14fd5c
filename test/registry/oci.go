// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package registry is a small, read-only OCI distribution registry for tests.
//
// It serves images loaded from OCI image archives (a tar of an OCI image
// layout: oci-layout, index.json, blobs/<alg>/<hex>) or from OCI layout
// directories, under any reference the caller chooses, e.g.
// "ghcr.io/containerd/busybox:1.36". Only the pull side of the distribution
// API is implemented: GET/HEAD /v2/, /v2/<name>/manifests/<tag|digest> and
// /v2/<name>/blobs/<digest>.
//
// The package also has small helpers to compose images for the tests
// (stacking the layers of several single-layer images into one multi-layer
// image, adding synthetic platforms to make a multi-platform index), see
// compose.go. It depends on the standard library only.
package registry

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Media types used by the registry.
const (
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIConfig      = "application/vnd.oci.image.config.v1+json"
	MediaTypeOCILayer       = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

	// AnnotationRefName is the OCI annotation naming an image in index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is containerd's annotation with the full image name.
	AnnotationImageName = "io.containerd.image.name"
)

// Platform is an OCI platform.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

// String returns os/arch[/variant].
func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatform parses os/arch[/variant].
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant]", s)
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	URLs        []string          `json:"urls,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Index is an OCI image index (and the shape of index.json).
type Index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Digest returns the sha256 digest string of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ValidDigest reports whether d looks like a sha256 digest.
func ValidDigest(d string) bool {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil && strings.ToLower(hexPart) == hexPart
}

// IsIndexType reports whether mt is an index/manifest-list media type.
func IsIndexType(mt string) bool {
	return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList
}

// IsManifestType reports whether mt is an image manifest media type.
func IsManifestType(mt string) bool {
	return mt == MediaTypeOCIManifest || mt == MediaTypeDockerManifest
}

// Layout is an OCI image layout held in memory: its index.json and its blobs.
type Layout struct {
	Index Index
	Blobs map[string][]byte // digest -> content
}

// NewLayout returns an empty layout.
func NewLayout() *Layout {
	return &Layout{Index: Index{SchemaVersion: 2, MediaType: MediaTypeOCIIndex}, Blobs: map[string][]byte{}}
}

// AddBlob stores b and returns a descriptor for it.
func (l *Layout) AddBlob(mediaType string, b []byte) Descriptor {
	d := Digest(b)
	l.Blobs[d] = b
	return Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// AddJSON marshals v, stores it and returns its descriptor.
func (l *Layout) AddJSON(mediaType string, v any) (Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Descriptor{}, err
	}
	return l.AddBlob(mediaType, b), nil
}

// Blob returns the content of the blob d.
func (l *Layout) Blob(d string) ([]byte, error) {
	b, ok := l.Blobs[d]
	if !ok {
		return nil, fmt.Errorf("blob %s not found in layout", d)
	}
	return b, nil
}

// ReadIndex reads the index blob d.
func (l *Layout) ReadIndex(d string) (Index, error) {
	var idx Index
	b, err := l.Blob(d)
	if err != nil {
		return idx, err
	}
	return idx, json.Unmarshal(b, &idx)
}

// ReadManifest reads the manifest blob d.
func (l *Layout) ReadManifest(d string) (Manifest, error) {
	var m Manifest
	b, err := l.Blob(d)
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// Walk calls fn for desc and every descriptor reachable from it.
func (l *Layout) Walk(desc Descriptor, fn func(Descriptor) error) error {
	if err := fn(desc); err != nil {
		return err
	}
	switch {
	case IsIndexType(desc.MediaType):
		idx, err := l.ReadIndex(desc.Digest)
		if err != nil {
			return err
		}
		for _, c := range idx.Manifests {
			if err := l.Walk(c, fn); err != nil {
				return err
			}
		}
	case IsManifestType(desc.MediaType):
		m, err := l.ReadManifest(desc.Digest)
		if err != nil {
			return err
		}
		if err := l.Walk(m.Config, fn); err != nil {
			return err
		}
		for _, c := range m.Layers {
			if err := l.Walk(c, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Verify checks that every blob reachable from index.json is present, has the
// declared size and matches its digest.
func (l *Layout) Verify() error {
	for _, top := range l.Index.Manifests {
		err := l.Walk(top, func(d Descriptor) error {
			b, ok := l.Blobs[d.Digest]
			if !ok {
				return fmt.Errorf("missing blob %s (%s)", d.Digest, d.MediaType)
			}
			if int64(len(b)) != d.Size {
				return fmt.Errorf("blob %s: size %d, descriptor says %d", d.Digest, len(b), d.Size)
			}
			if Digest(b) != d.Digest {
				return fmt.Errorf("blob %s: content digest mismatch", d.Digest)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Lookup returns the top-level descriptor of index.json that name selects.
// An empty name selects the only entry. Otherwise an entry matches when its
// ref-name or containerd image-name annotation equals name, or when its
// ref-name equals the tag of name.
func (l *Layout) Lookup(name string) (Descriptor, error) {
	ms := l.Index.Manifests
	if name == "" {
		if len(ms) != 1 {
			return Descriptor{}, fmt.Errorf("layout has %d top-level manifests, a name is needed", len(ms))
		}
		return ms[0], nil
	}
	_, tag, _ := splitRef(name)
	for _, d := range ms {
		if d.Annotations[AnnotationImageName] == name || d.Annotations[AnnotationRefName] == name {
			return d, nil
		}
	}
	for _, d := range ms {
		if tag != "" && d.Annotations[AnnotationRefName] == tag {
			return d, nil
		}
	}
	if len(ms) == 1 {
		return ms[0], nil
	}
	return Descriptor{}, fmt.Errorf("no manifest named %q in layout", name)
}

// LoadLayout loads an OCI image archive (tar, optionally gzip-compressed is
// not supported) or an OCI layout directory.
func LoadLayout(p string) (*Layout, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return loadLayoutDir(p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	l, err := ReadArchive(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return l, nil
}

func loadLayoutDir(dir string) (*Layout, error) {
	l := NewLayout()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &l.Index); err != nil {
		return nil, fmt.Errorf("%s/index.json: %w", dir, err)
	}
	root := filepath.Join(dir, "blobs")
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		alg, hexPart, ok := strings.Cut(filepath.ToSlash(rel), "/")
		if !ok {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		l.Blobs[alg+":"+hexPart] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return l, l.Verify()
}

// ReadArchive reads an OCI image archive from r.
func ReadArchive(r io.Reader) (*Layout, error) {
	l := NewLayout()
	tr := tar.NewReader(r)
	var haveIndex bool
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		switch {
		case name == "index.json":
			if err := json.Unmarshal(b, &l.Index); err != nil {
				return nil, fmt.Errorf("index.json: %w", err)
			}
			haveIndex = true
		case strings.HasPrefix(name, "blobs/"):
			alg, hexPart, ok := strings.Cut(strings.TrimPrefix(name, "blobs/"), "/")
			if ok && !strings.Contains(hexPart, "/") {
				l.Blobs[alg+":"+hexPart] = b
			}
		}
	}
	if !haveIndex {
		return nil, errors.New("not an OCI image archive: no index.json")
	}
	return l, l.Verify()
}

// WriteArchive writes l as an OCI image archive to w (deterministic order).
func (l *Layout) WriteArchive(w io.Writer) error {
	tw := tar.NewWriter(w)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	idx, err := json.Marshal(l.Index)
	if err != nil {
		return err
	}
	if err := add("index.json", idx); err != nil {
		return err
	}
	// Only blobs reachable from index.json are written.
	keep := map[string]bool{}
	for _, top := range l.Index.Manifests {
		if err := l.Walk(top, func(d Descriptor) error { keep[d.Digest] = true; return nil }); err != nil {
			return err
		}
	}
	ds := make([]string, 0, len(keep))
	for d := range keep {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	for _, d := range ds {
		b, ok := l.Blobs[d]
		if !ok {
			return fmt.Errorf("missing blob %s", d)
		}
		if err := add("blobs/"+strings.Replace(d, ":", "/", 1), b); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteArchiveFile writes l to the file p.
func (l *Layout) WriteArchiveFile(p string) error {
	var buf bytes.Buffer
	if err := l.WriteArchive(&buf); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// splitRef splits "host/repo/name:tag@digest" into the name (without tag or
// digest), the tag and the digest.
func splitRef(ref string) (name, tag, dgst string) {
	name = ref
	if i := strings.Index(name, "@"); i >= 0 {
		name, dgst = name[:i], name[i+1:]
	}
	if i := strings.LastIndex(name, ":"); i >= 0 && !strings.Contains(name[i:], "/") {
		name, tag = name[:i], name[i+1:]
	}
	return name, tag, dgst
}
