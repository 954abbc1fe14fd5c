# shellcheck shell=bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# nerdctl, the Docker-like front end of containerd, into /opt/rrc/nerdctl/bin (not on PATH: the
# tests call it there). Sourced by contrib/setup/setup.sh, after 10-cni.sh (its CNI plugins).
#
# `go install github.com/containerd/nerdctl/v2/cmd/nerdctl@V` is refused: nerdctl's go.mod
# replaces its test-framework module github.com/containerd/nerdctl/mod/tigron with a directory
# of its repository that the module proxy does not serve. The command itself needs only
# tigron's `tig.T` interface (one test helper in pkg/testutil takes one). So: the module is
# downloaded from the proxy, copied, and built with tigron replaced by a stand-in module that
# declares that interface. v2.3.5, not 2.4.x: 2.4's moby/moby/v2 beta is not on the proxy.
NERDCTL_VERSION=v2.3.5
NERDCTL_DIR=/opt/rrc/nerdctl/bin

# Version the installed nerdctl reports ("nerdctl version 2.3.5" -> "v2.3.5"), empty if none runs.
nerdctl_version() {
	[[ -x $1 ]] || return 0
	"$1" --version 2>/dev/null | awk '{ print "v" $3; exit }' || true
}

setup_nerdctl() {
	local bin=$NERDCTL_DIR/nerdctl mod=github.com/containerd/nerdctl/v2 have tmp src start
	have=$(nerdctl_version "$bin")
	if [[ $have == "$NERDCTL_VERSION" ]]; then
		log "nerdctl $have found at $bin"
		return 0
	fi
	command -v go >/dev/null || die "Go is needed to build nerdctl $NERDCTL_VERSION: install Go to /usr/local/go"
	log "installing nerdctl $NERDCTL_VERSION into $NERDCTL_DIR (module from the Go module proxy, built with a stand-in for its test module${have:+; found $have})"
	tmp=$(mktemp -d /tmp/rrc-setup-nerdctl.XXXXXX)
	CLEANUP+=("rm -rf '$tmp'")
	start=$SECONDS
	src=$( (cd "$tmp" && GOWORK=off go mod download -json "$mod@$NERDCTL_VERSION") |
		awk -F'"' '$2 == "Dir" { print $4 }') || src=""
	[[ -n $src && -d $src ]] || die "go mod download of $mod@$NERDCTL_VERSION failed"
	cp -r "$src" "$tmp/src"
	chmod -R u+w "$tmp/src"
	# The stand-in for mod/tigron: only the interface the command's code refers to.
	mkdir -p "$tmp/tigron/tig"
	printf 'module github.com/containerd/nerdctl/mod/tigron\n\ngo 1.24\n' >"$tmp/tigron/go.mod"
	cat >"$tmp/tigron/tig/t.go" <<-'EOF'
		// Package tig: stand-in for nerdctl's test module, written by io.rrc.v1's setup.
		package tig

		// T is what nerdctl's pkg/testutil asks of a test.
		type T interface {
			Helper()
			Log(args ...any)
			FailNow()
		}
	EOF
	(cd "$tmp/src" && quiet "go mod edit of nerdctl failed" env GOWORK=off \
		go mod edit -replace "github.com/containerd/nerdctl/mod/tigron@v0.0.0=$tmp/tigron")
	(cd "$tmp/src" && quiet "go build of nerdctl $NERDCTL_VERSION failed" \
		env GOWORK=off GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0 go build -o "$tmp/nerdctl" \
		-ldflags "-s -w -X $mod/pkg/version.Version=$NERDCTL_VERSION" ./cmd/nerdctl)
	mkdir -p "$NERDCTL_DIR"
	# Next to the target, then renamed: safe while an old binary runs.
	install -m 0755 "$tmp/nerdctl" "$NERDCTL_DIR/.nerdctl.rrc-new"
	mv -f "$NERDCTL_DIR/.nerdctl.rrc-new" "$bin"
	have=$(nerdctl_version "$bin")
	[[ $have == "$NERDCTL_VERSION" ]] || die "$bin reports version '$have', expected $NERDCTL_VERSION"
	log "nerdctl $have installed at $bin (built in $((SECONDS - start)) s)"
}

setup_nerdctl
