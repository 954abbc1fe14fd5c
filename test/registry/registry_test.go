// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// testImage returns a single-platform, single-layer image whose layer holds
// the given files.
func testImage(t *testing.T, files map[string]string, cmd ...string) *Layout {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	l := NewLayout()
	ld := l.AddBlob(MediaTypeOCILayer, tb.Bytes())
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Cmd": cmd},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{ld.Digest}},
		"history":      []map[string]string{{"created_by": "test"}},
	}
	cd, err := l.AddJSON(MediaTypeOCIConfig, cfg)
	if err != nil {
		t.Fatal(err)
	}
	md, err := l.AddJSON(MediaTypeOCIManifest, Manifest{SchemaVersion: 2, MediaType: MediaTypeOCIManifest, Config: cd, Layers: []Descriptor{ld}})
	if err != nil {
		t.Fatal(err)
	}
	l.Index.Manifests = []Descriptor{md}
	return l
}

type fixture struct {
	srv       *httptest.Server
	index     Descriptor // multi-platform index served as ghcr.io/test/multi:1
	amd64     Descriptor // its linux/amd64 manifest
	arm64     Descriptor // its linux/arm64/v8 manifest
	single    Descriptor // single manifest served as registry.k8s.io/single:2
	layer     Descriptor // layer of single
	layerData []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	reg := New()
	base := testImage(t, map[string]string{"hello": "world"}, "sh")
	multi, err := MultiPlatform(base, []Platform{{OS: "linux", Architecture: "arm64", Variant: "v8"}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{}
	if f.index, err = reg.AddLayout("ghcr.io/test/multi:1", multi, ""); err != nil {
		t.Fatal(err)
	}
	idx, err := multi.ReadIndex(f.index.Digest)
	if err != nil {
		t.Fatal(err)
	}
	f.amd64, f.arm64 = idx.Manifests[0], idx.Manifests[1]

	single := testImage(t, map[string]string{"pause": "x"})
	if f.single, err = reg.AddLayout("registry.k8s.io/single:2", single, ""); err != nil {
		t.Fatal(err)
	}
	_, m, err := ImageManifest(single, defaultPlatform)
	if err != nil {
		t.Fatal(err)
	}
	f.layer = m.Layers[0]
	f.layerData = single.Blobs[f.layer.Digest]
	f.srv = httptest.NewServer(reg)
	t.Cleanup(f.srv.Close)
	return f
}

func TestRegistryServe(t *testing.T) {
	f := newFixture(t)
	type want struct {
		status      int
		contentType string
		digest      string
		length      int64
		errCode     string
	}
	tests := []struct {
		name    string
		method  string
		path    string
		host    string // Host header; "" = the test server's own address
		headers map[string]string
		want    want
	}{
		{"base GET", "GET", "/v2/", "", nil, want{status: 200, contentType: "application/json", length: 2}},
		{"base HEAD", "HEAD", "/v2/", "", nil, want{status: 200, length: 2}},
		{"base no slash", "GET", "/v2", "", nil, want{status: 200, length: 2}},
		{"index by tag, upstream Host", "GET", "/v2/test/multi/manifests/1", "ghcr.io", nil,
			want{200, MediaTypeOCIIndex, f.index.Digest, f.index.Size, ""}},
		{"index by tag, HEAD", "HEAD", "/v2/test/multi/manifests/1", "ghcr.io", nil,
			want{200, MediaTypeOCIIndex, f.index.Digest, f.index.Size, ""}},
		{"index by tag, mirror ns param", "GET", "/v2/test/multi/manifests/1?ns=ghcr.io", "", nil,
			want{200, MediaTypeOCIIndex, f.index.Digest, f.index.Size, ""}},
		{"index by tag, registry's own address", "GET", "/v2/test/multi/manifests/1", "", nil,
			want{200, MediaTypeOCIIndex, f.index.Digest, f.index.Size, ""}},
		{"child manifest by digest", "GET", "/v2/test/multi/manifests/" + f.arm64.Digest, "ghcr.io", nil,
			want{200, MediaTypeOCIManifest, f.arm64.Digest, f.arm64.Size, ""}},
		{"index by digest HEAD", "HEAD", "/v2/test/multi/manifests/" + f.index.Digest, "ghcr.io", nil,
			want{200, MediaTypeOCIIndex, f.index.Digest, f.index.Size, ""}},
		{"single manifest", "GET", "/v2/single/manifests/2", "registry.k8s.io", nil,
			want{200, MediaTypeOCIManifest, f.single.Digest, f.single.Size, ""}},
		{"blob GET", "GET", "/v2/single/blobs/" + f.layer.Digest, "registry.k8s.io", nil,
			want{200, "application/octet-stream", f.layer.Digest, f.layer.Size, ""}},
		{"blob HEAD", "HEAD", "/v2/single/blobs/" + f.layer.Digest, "registry.k8s.io", nil,
			want{200, "application/octet-stream", f.layer.Digest, f.layer.Size, ""}},
		{"blob range", "GET", "/v2/single/blobs/" + f.layer.Digest, "registry.k8s.io", map[string]string{"Range": "bytes=10-"},
			want{206, "application/octet-stream", f.layer.Digest, f.layer.Size - 10, ""}},
		{"unknown tag", "GET", "/v2/test/multi/manifests/nope", "ghcr.io", nil, want{status: 404, errCode: "MANIFEST_UNKNOWN"}},
		{"unknown tag HEAD", "HEAD", "/v2/test/multi/manifests/nope", "ghcr.io", nil, want{status: 404}},
		{"unknown repo", "GET", "/v2/other/repo/manifests/1", "ghcr.io", nil, want{status: 404, errCode: "NAME_UNKNOWN"}},
		{"blob of another repo", "GET", "/v2/test/multi/blobs/" + f.layer.Digest, "ghcr.io", nil, want{status: 404, errCode: "BLOB_UNKNOWN"}},
		{"layer digest as manifest", "GET", "/v2/single/manifests/" + f.layer.Digest, "registry.k8s.io", nil, want{status: 404, errCode: "MANIFEST_UNKNOWN"}},
		{"invalid digest", "GET", "/v2/single/blobs/sha256:abc", "registry.k8s.io", nil, want{status: 400, errCode: "DIGEST_INVALID"}},
		{"invalid name", "GET", "/v2/Bad_Name/manifests/1", "ghcr.io", nil, want{status: 400, errCode: "NAME_INVALID"}},
		{"push refused", "PUT", "/v2/single/manifests/3", "registry.k8s.io", nil, want{status: 405, errCode: "UNSUPPORTED"}},
		{"upload refused", "POST", "/v2/single/blobs/uploads/", "registry.k8s.io", nil, want{status: 405, errCode: "UNSUPPORTED"}},
		{"not the API", "GET", "/index.html", "", nil, want{status: 404, errCode: "NOT_FOUND"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, f.srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want.status {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, tc.want.status, body)
			}
			if got := resp.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
				t.Errorf("Docker-Distribution-API-Version = %q", got)
			}
			if tc.want.contentType != "" {
				if got := resp.Header.Get("Content-Type"); got != tc.want.contentType {
					t.Errorf("Content-Type = %q, want %q", got, tc.want.contentType)
				}
			}
			if tc.want.digest != "" {
				if got := resp.Header.Get("Docker-Content-Digest"); got != tc.want.digest {
					t.Errorf("Docker-Content-Digest = %q, want %q", got, tc.want.digest)
				}
			}
			if tc.want.length != 0 {
				if got := resp.Header.Get("Content-Length"); got != strconv.FormatInt(tc.want.length, 10) {
					t.Errorf("Content-Length = %q, want %d", got, tc.want.length)
				}
				if tc.method == "GET" && int64(len(body)) != tc.want.length {
					t.Errorf("body length %d, want %d", len(body), tc.want.length)
				}
			}
			if tc.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD returned a body of %d bytes", len(body))
			}
			if tc.method == "GET" && tc.want.status == 200 && tc.want.digest != "" && Digest(body) != tc.want.digest {
				t.Errorf("body digest %s, want %s", Digest(body), tc.want.digest)
			}
			if tc.want.status == 206 && !bytes.Equal(body, f.layerData[10:]) {
				t.Errorf("range body mismatch")
			}
			if tc.want.errCode != "" {
				var e struct {
					Errors []struct{ Code string } `json:"errors"`
				}
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.want.errCode {
					t.Errorf("error body %s, want code %s", body, tc.want.errCode)
				}
			}
		})
	}
}

func TestParseReference(t *testing.T) {
	tests := []struct {
		in      string
		want    Reference
		wantErr bool
	}{
		{in: "ghcr.io/containerd/busybox:1.36", want: Reference{Host: "ghcr.io", Repo: "containerd/busybox", Tag: "1.36"}},
		{in: "busybox:latest", want: Reference{Host: "docker.io", Repo: "library/busybox", Tag: "latest"}},
		{in: "docker.io/library/alpine:3", want: Reference{Host: "docker.io", Repo: "library/alpine", Tag: "3"}},
		{in: "registry-1.docker.io/foo/bar:1", want: Reference{Host: "docker.io", Repo: "foo/bar", Tag: "1"}},
		{in: "localhost:5000/x:y", want: Reference{Host: "localhost:5000", Repo: "x", Tag: "y"}},
		{in: "registry.k8s.io/e2e-test-images/busybox:1.29-2", want: Reference{Host: "registry.k8s.io", Repo: "e2e-test-images/busybox", Tag: "1.29-2"}},
		{in: "ghcr.io/containerd/busybox@sha256:" + strings.Repeat("a", 64), want: Reference{Host: "ghcr.io", Repo: "containerd/busybox", Digest: "sha256:" + strings.Repeat("a", 64)}},
		{in: "ghcr.io/containerd/busybox", wantErr: true},
		{in: "ghcr.io/containerd/busybox@sha256:abc", wantErr: true},
		{in: "ghcr.io/Upper/case:1", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseReference(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAddImageDigestMismatch(t *testing.T) {
	reg := New()
	l := testImage(t, map[string]string{"a": "b"})
	if _, err := reg.AddLayout("ghcr.io/x/y@sha256:"+strings.Repeat("0", 64), l, ""); err == nil {
		t.Fatal("expected an error for a reference whose digest is not the image's")
	}
	d, _ := l.Lookup("")
	if err := reg.AddImage("ghcr.io/x/y@"+d.Digest, l, d); err != nil {
		t.Fatal(err)
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	l := testImage(t, map[string]string{"a": "b"}, "true")
	if err := SetName(l, "ghcr.io/x/y:1"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.WriteArchive(&buf); err != nil {
		t.Fatal(err)
	}
	l2, err := ReadArchive(&buf)
	if err != nil {
		t.Fatal(err)
	}
	d, err := l2.Lookup("ghcr.io/x/y:1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest != l.Index.Manifests[0].Digest || d.Annotations[AnnotationRefName] != "1" {
		t.Errorf("round trip changed the index: %+v", d)
	}
	if len(l2.Blobs) != 3 {
		t.Errorf("got %d blobs, want 3", len(l2.Blobs))
	}
	// A corrupted blob is refused. The layer's: a corrupted manifest or
	// config would already fail WriteArchive, which reads them.
	var bad bytes.Buffer
	m, err := l.ReadManifest(l.Index.Manifests[0].Digest)
	if err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest: %v, %d layers", err, len(m.Layers))
	}
	l.Blobs[m.Layers[0].Digest] = append([]byte("x"), l.Blobs[m.Layers[0].Digest]...)
	if err := l.WriteArchive(&bad); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadArchive(&bad); err == nil {
		t.Error("corrupted archive accepted")
	}
}

func TestStack(t *testing.T) {
	base := testImage(t, map[string]string{"bin/sh": "sh"}, "sh")
	top := testImage(t, map[string]string{".wh.file": ""})
	l, err := Stack([]*Layout{base, top}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	_, m, err := ImageManifest(l, defaultPlatform)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers, want 2", len(m.Layers))
	}
	cfg, err := readConfig(l, m.Config)
	if err != nil {
		t.Fatal(err)
	}
	var rfs rootFS
	var c struct{ Cmd []string }
	var hist []json.RawMessage
	if err := cfg.get("rootfs", &rfs); err != nil {
		t.Fatal(err)
	}
	if err := cfg.get("config", &c); err != nil {
		t.Fatal(err)
	}
	if err := cfg.get("history", &hist); err != nil {
		t.Fatal(err)
	}
	if len(rfs.DiffIDs) != 2 || rfs.DiffIDs[0] != m.Layers[0].Digest || rfs.DiffIDs[1] != m.Layers[1].Digest {
		t.Errorf("diff_ids %v do not match layers", rfs.DiffIDs)
	}
	if len(c.Cmd) != 1 || c.Cmd[0] != "sh" {
		t.Errorf("config not taken from image 0: %v", c.Cmd)
	}
	if len(hist) != 2 {
		t.Errorf("history has %d entries, want 2", len(hist))
	}
	if _, err := Stack([]*Layout{base}, 1); err == nil {
		t.Error("configFrom out of range accepted")
	}
}

func TestMultiPlatform(t *testing.T) {
	base := testImage(t, map[string]string{"a": "b"})
	l, err := MultiPlatform(base, []Platform{
		{OS: "linux", Architecture: "amd64"}, // the base's own: skipped
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "s390x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	top, _ := l.Lookup("")
	idx, err := l.ReadIndex(top.Digest)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	layers := map[string]bool{}
	for _, d := range idx.Manifests {
		got = append(got, d.Platform.String())
		m, err := l.ReadManifest(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := readConfig(l, m.Config)
		if err != nil {
			t.Fatal(err)
		}
		p, err := configPlatform(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if p.String() != d.Platform.String() {
			t.Errorf("config platform %s, index says %s", p, d.Platform)
		}
		for _, ld := range m.Layers {
			if layers[ld.Digest] {
				t.Errorf("layer %s shared between platforms", ld.Digest)
			}
			layers[ld.Digest] = true
		}
	}
	if strings.Join(got, " ") != "linux/amd64 linux/arm64/v8 linux/s390x" {
		t.Errorf("platforms %v", got)
	}
	// Another base image gets synthetic layers of its own.
	other, err := MultiPlatform(testImage(t, map[string]string{"c": "d"}), []Platform{{OS: "linux", Architecture: "s390x"}})
	if err != nil {
		t.Fatal(err)
	}
	for d := range other.Blobs {
		if layers[d] {
			t.Errorf("layer %s shared between two multi-platform images", d)
		}
	}
}

func TestGenerateTLS(t *testing.T) {
	caPEM, cert, err := GenerateTLS([]string{"ghcr.io", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(caPEM, []byte("BEGIN CERTIFICATE")) || len(cert.Certificate) != 1 {
		t.Fatal("bad certificate material")
	}
	srv := httptest.NewUnstartedServer(New())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA PEM not parsed")
	}
	for _, name := range []string{"ghcr.io", "127.0.0.1"} {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name}}}
		resp, err := client.Get(srv.URL + "/v2/")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "docker.io"}}}
	if resp, err := client.Get(srv.URL + "/v2/"); err == nil {
		resp.Body.Close()
		t.Error("certificate accepted for a name it was not made for")
	}
}
