// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package oci

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Media types and annotations (OCI image spec v1.1, containerd).
const (
	MediaTypeIndex     = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig    = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"

	AnnotationRefName   = "org.opencontainers.image.ref.name"
	AnnotationImageName = "io.containerd.image.name"
	LayoutVersion       = "1.0.0"
)

// Image describes the image to write.
type Image struct {
	Ref        string // full reference, e.g. rrc.local/redis:7 (":latest" added if no tag)
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	Labels     map[string]string
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is an OCI platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Index is an OCI image index (index.json).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// ContainerConfig is the "config" member of an image configuration.
type ContainerConfig struct {
	User       string            `json:"User,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

// RootFS lists the layers' diff IDs.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// History is one image history entry.
type History struct {
	Created   string `json:"created,omitempty"`
	CreatedBy string `json:"created_by,omitempty"`
}

// Config is an OCI image configuration.
type Config struct {
	Created      string          `json:"created"`
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       ContainerConfig `json:"config"`
	RootFS       RootFS          `json:"rootfs"`
	History      []History       `json:"history,omitempty"`
}

// DockerManifestEntry is one entry of a docker-save manifest.json, written
// alongside the OCI layout so that `docker load` accepts the archive too.
type DockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// DefaultPath is put in Env when the image's Env has no PATH.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// NormalizeRef adds ":latest" when ref has neither tag nor digest, and
// returns the full ref and its tag (the OCI ref name).
func NormalizeRef(ref string) (full, tag string, err error) {
	if ref == "" {
		return "", "", fmt.Errorf("empty image reference")
	}
	if strings.ContainsAny(ref, " \t\n") || strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/") {
		return "", "", fmt.Errorf("invalid image reference %q", ref)
	}
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref, ref[i+1:], nil
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		if i == len(last)-1 {
			return "", "", fmt.Errorf("invalid image reference %q: empty tag", ref)
		}
		return ref, last[i+1:], nil
	}
	return ref + ":latest", "latest", nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Archive is a complete image: its blobs and the layout files.
type Archive struct {
	Ref      string
	Index    Index
	Manifest Blob
	Config   Blob
	Layer    Blob
	DiffID   string
}

// NewArchive assembles the config, manifest and index of img around the
// given layer blob (gzip) and its diff ID.
func NewArchive(img Image, layer Blob, diffID string) (*Archive, error) {
	full, tag, err := NormalizeRef(img.Ref)
	if err != nil {
		return nil, err
	}
	env := append([]string(nil), img.Env...)
	hasPath := false
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			hasPath = true
		}
	}
	if !hasPath {
		env = append([]string{DefaultPath}, env...)
	}
	wd := img.WorkingDir
	if wd == "" {
		wd = "/"
	}
	const created = "1970-01-01T00:00:00Z"
	cfg := Config{
		Created:      created,
		Architecture: "amd64",
		OS:           "linux",
		Config: ContainerConfig{
			User:       img.User,
			Env:        env,
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			WorkingDir: wd,
			Labels:     img.Labels,
		},
		RootFS:  RootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []History{{Created: created, CreatedBy: "rrc imagebuild"}},
	}
	cfgData := mustJSON(cfg)
	cfgBlob := Blob{MediaType: MediaTypeConfig, Digest: Digest(cfgData), Data: cfgData}
	man := Manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        Descriptor{MediaType: MediaTypeConfig, Digest: cfgBlob.Digest, Size: cfgBlob.Size()},
		Layers:        []Descriptor{{MediaType: layer.MediaType, Digest: layer.Digest, Size: layer.Size()}},
	}
	manData := mustJSON(man)
	manBlob := Blob{MediaType: MediaTypeManifest, Digest: Digest(manData), Data: manData}
	idx := Index{
		SchemaVersion: 2,
		MediaType:     MediaTypeIndex,
		Manifests: []Descriptor{{
			MediaType: MediaTypeManifest,
			Digest:    manBlob.Digest,
			Size:      manBlob.Size(),
			Annotations: map[string]string{
				AnnotationImageName: full,
				AnnotationRefName:   tag,
			},
			Platform: &Platform{Architecture: "amd64", OS: "linux"},
		}},
	}
	return &Archive{Ref: full, Index: idx, Manifest: manBlob, Config: cfgBlob, Layer: layer, DiffID: diffID}, nil
}

func blobPath(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }

// Files returns the archive's files (name -> content) in the order they
// are written.
func (a *Archive) Files() []struct {
	Name string
	Data []byte
} {
	docker := []DockerManifestEntry{{
		Config:   blobPath(a.Config.Digest),
		RepoTags: []string{a.Ref},
		Layers:   []string{blobPath(a.Layer.Digest)},
	}}
	files := []struct {
		Name string
		Data []byte
	}{
		{"oci-layout", mustJSON(map[string]string{"imageLayoutVersion": LayoutVersion})},
		{"index.json", mustJSON(a.Index)},
		{"manifest.json", mustJSON(docker)},
	}
	blobs := []Blob{a.Config, a.Layer, a.Manifest}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].Digest < blobs[j].Digest })
	for _, b := range blobs {
		files = append(files, struct {
			Name string
			Data []byte
		}{blobPath(b.Digest), b.Data})
	}
	return files
}

// WriteTo writes the archive as a tar stream (OCI image layout plus a
// docker-compatible manifest.json).
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	tw := tar.NewWriter(cw)
	dirs := []string{"blobs/", "blobs/sha256/"}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
			return cw.n, err
		}
	}
	for _, f := range a.Files() {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Mode: 0o644, Size: int64(len(f.Data)), ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
			return cw.n, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return cw.n, err
		}
	}
	err := tw.Close()
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
