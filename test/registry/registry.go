// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Registry is a read-only OCI distribution registry serving images added
// with AddImage. It is an http.Handler and safe for concurrent use.
type Registry struct {
	// Logf, when set, receives one line per request.
	Logf func(format string, args ...any)

	mu    sync.RWMutex
	blobs map[string]blobEntry
	repos map[string]*repository // key: host/repo
}

type blobEntry struct {
	data      []byte
	mediaType string // set for manifests and indexes
}

type repository struct {
	tags    map[string]string // tag -> digest
	digests map[string]bool   // every blob reachable from the repository's tags
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{blobs: map[string]blobEntry{}, repos: map[string]*repository{}}
}

// Reference is a parsed image reference.
type Reference struct {
	Host   string // e.g. ghcr.io, docker.io
	Repo   string // e.g. containerd/busybox, library/alpine
	Tag    string
	Digest string
}

// String returns host/repo[:tag][@digest].
func (r Reference) String() string {
	s := r.Host + "/" + r.Repo
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

var (
	repoRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	tagRe  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// ParseReference parses an image reference the way docker/containerd
// normalise it: a missing host means docker.io, and a single-component
// docker.io repository gets the "library/" prefix.
func ParseReference(s string) (Reference, error) {
	name, tag, dgst := splitRef(s)
	var r Reference
	host, rest, ok := strings.Cut(name, "/")
	if !ok || (!strings.ContainsAny(host, ".:") && host != "localhost") {
		host, rest = "docker.io", name
	}
	r.Host = normalizeHost(host)
	if r.Host == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	r.Repo, r.Tag, r.Digest = rest, tag, dgst
	if !repoRe.MatchString(r.Repo) {
		return r, fmt.Errorf("invalid repository name in %q", s)
	}
	if r.Tag != "" && !tagRe.MatchString(r.Tag) {
		return r, fmt.Errorf("invalid tag in %q", s)
	}
	if r.Digest != "" && !ValidDigest(r.Digest) {
		return r, fmt.Errorf("invalid digest in %q", s)
	}
	if r.Tag == "" && r.Digest == "" {
		return r, fmt.Errorf("reference %q has neither tag nor digest", s)
	}
	return r, nil
}

func normalizeHost(h string) string {
	h = strings.ToLower(h)
	switch h {
	case "registry-1.docker.io", "index.docker.io":
		return "docker.io"
	}
	return h
}

// AddImage serves desc (a manifest or index of l, and everything it
// references) under ref. A tag in ref is pointed at desc; a digest in ref
// must equal desc's digest.
func (r *Registry) AddImage(ref string, l *Layout, desc Descriptor) error {
	pr, err := ParseReference(ref)
	if err != nil {
		return err
	}
	if !IsIndexType(desc.MediaType) && !IsManifestType(desc.MediaType) {
		return fmt.Errorf("%s: top-level descriptor has media type %q, want a manifest or an index", ref, desc.MediaType)
	}
	if pr.Digest != "" && pr.Digest != desc.Digest {
		return fmt.Errorf("%s: image digest is %s", ref, desc.Digest)
	}
	entries := map[string]blobEntry{}
	err = l.Walk(desc, func(d Descriptor) error {
		b, err := l.Blob(d.Digest)
		if err != nil {
			return err
		}
		if Digest(b) != d.Digest || int64(len(b)) != d.Size {
			return fmt.Errorf("blob %s does not match its descriptor", d.Digest)
		}
		e := blobEntry{data: b}
		if IsIndexType(d.MediaType) || IsManifestType(d.MediaType) {
			e.mediaType = d.MediaType
		}
		if old, ok := entries[d.Digest]; !ok || old.mediaType == "" {
			entries[d.Digest] = e
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	key := pr.Host + "/" + pr.Repo
	repo := r.repos[key]
	if repo == nil {
		repo = &repository{tags: map[string]string{}, digests: map[string]bool{}}
		r.repos[key] = repo
	}
	for d, e := range entries {
		if old, ok := r.blobs[d]; !ok || old.mediaType == "" {
			r.blobs[d] = e
		}
		repo.digests[d] = true
	}
	if pr.Tag != "" {
		repo.tags[pr.Tag] = desc.Digest
	}
	return nil
}

// AddLayout serves the top-level manifest of l selected by name (see
// Layout.Lookup; "" for the only one) under ref.
func (r *Registry) AddLayout(ref string, l *Layout, name string) (Descriptor, error) {
	d, err := l.Lookup(name)
	if err != nil {
		return d, err
	}
	return d, r.AddImage(ref, l, d)
}

// Images lists the served references (host/repo:tag), sorted.
func (r *Registry) Images() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for k, repo := range r.repos {
		for t, d := range repo.tags {
			out = append(out, k+":"+t+"@"+d)
		}
	}
	sort.Strings(out)
	return out
}

// errorCode is a distribution API error code.
type errorCode struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, req *http.Request, status int, code, msg string) {
	body, _ := json.Marshal(struct {
		Errors []errorCode `json:"errors"`
	}{[]errorCode{{Code: code, Message: msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if req.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// ServeHTTP implements the pull side of the OCI distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.Logf != nil {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		w = rec
		defer func() {
			r.Logf("%s %s%s ns=%q -> %d (%s)", req.Method, req.Host, req.URL.Path, req.URL.Query().Get("ns"), rec.status, time.Since(start).Round(time.Microsecond))
		}()
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, req, http.StatusMethodNotAllowed, "UNSUPPORTED", "read-only registry")
		return
	}
	p := req.URL.Path
	if p == "/v2" || p == "/v2/" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		if req.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}"))
		}
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		writeError(w, req, http.StatusNotFound, "NOT_FOUND", "not found")
		return
	}
	var name, kind, ref string
	if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		name, kind, ref = rest[:i], "manifests", rest[i+len("/manifests/"):]
	} else if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
		name, kind, ref = rest[:i], "blobs", rest[i+len("/blobs/"):]
	} else {
		writeError(w, req, http.StatusNotFound, "NOT_FOUND", "not found")
		return
	}
	if !repoRe.MatchString(name) {
		writeError(w, req, http.StatusBadRequest, "NAME_INVALID", "invalid repository name")
		return
	}
	host := req.URL.Query().Get("ns") // set by containerd when it uses a mirror
	if host == "" {
		host = req.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	repo := r.lookupRepo(normalizeHost(host), name)
	if repo == nil {
		writeError(w, req, http.StatusNotFound, "NAME_UNKNOWN", "repository "+name+" not known to registry")
		return
	}
	switch kind {
	case "manifests":
		dgst := ref
		if !ValidDigest(ref) {
			if !tagRe.MatchString(ref) {
				writeError(w, req, http.StatusBadRequest, "TAG_INVALID", "invalid tag")
				return
			}
			if dgst, ok = repo.tags[ref]; !ok {
				writeError(w, req, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
				return
			}
		}
		e, ok := r.blobs[dgst]
		if !ok || !repo.digests[dgst] || e.mediaType == "" {
			writeError(w, req, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		h := w.Header()
		h.Set("Content-Type", e.mediaType)
		h.Set("Docker-Content-Digest", dgst)
		h.Set("Content-Length", strconv.Itoa(len(e.data)))
		h.Set("Etag", `"`+dgst+`"`)
		w.WriteHeader(http.StatusOK)
		if req.Method == http.MethodGet {
			_, _ = w.Write(e.data)
		}
	case "blobs":
		if !ValidDigest(ref) {
			writeError(w, req, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest")
			return
		}
		e, ok := r.blobs[ref]
		if !ok || !repo.digests[ref] {
			writeError(w, req, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Docker-Content-Digest", ref)
		h.Set("Etag", `"`+ref+`"`)
		// ServeContent sets Content-Length, handles Range and HEAD.
		http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(e.data))
	}
}

// lookupRepo finds host/name, or else the only repository called name on any
// host (so that a registry reached by its own address still serves images
// added under an upstream host name).
func (r *Registry) lookupRepo(host, name string) *repository {
	if repo := r.repos[host+"/"+name]; repo != nil {
		return repo
	}
	var found *repository
	for k, repo := range r.repos {
		if _, n, _ := strings.Cut(k, "/"); n == name {
			if found != nil {
				return nil
			}
			found = repo
		}
	}
	return found
}
