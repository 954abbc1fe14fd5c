# shellcheck shell=bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# The other containerd 2.x releases the shim is tested under (test/e2e/containerd_releases_test.go,
# LAB_CONTAINERD in docs/LAB.md): each release's containerd and containerd-shim-runc-v2 in a
# directory of its own, /opt/rrc/containerd-2.N/bin, never over /usr/local/bin's (the release
# pinned in go.mod). Sourced by contrib/setup/setup.sh.
#
# The oldest and the newest 2.x the Go module proxy serves; RRC_CONTAINERD_RELEASES lists others
# too, e.g. "v2.0.14 v2.1.9 v2.2.10 v2.4.2" (Debian forky's 2.1 and 2.2 as well): each takes
# minutes to build.
read -r -a CONTAINERD_RELEASES <<<"${RRC_CONTAINERD_RELEASES:-v2.0.14 v2.4.2}"
CONTAINERD_RELEASES_DIR=/opt/rrc
CONTAINERD_MODULE=github.com/containerd/containerd/v2

# install_containerd_release VERSION DEST: builds containerd and containerd-shim-runc-v2 of
# VERSION into DEST, unless DEST/.rrc-containerd records VERSION. Not go_install_pinned:
# `go install pkg@version` refuses 2.0's and 2.1's go.mod (it has exclude directives), so the
# module is copied from the module cache and built as the main module, with its own go.mod.
install_containerd_release() {
	local v=$1 dest=$2 stamp=$2/.rrc-containerd tmp src start b have
	if [[ -r $stamp && $(<"$stamp") == "$v" ]]; then
		log "containerd $v found in $dest"
		return 0
	fi
	command -v go >/dev/null || die "Go is needed to build containerd $v: install Go to /usr/local/go"
	log "installing containerd $v into $dest (built from its module, from the Go module proxy)"
	start=$SECONDS
	tmp=$(mktemp -d "/tmp/rrc-setup-containerd-$v.XXXXXX")
	CLEANUP+=("rm -rf '$tmp'")
	src=$(cd "$tmp" && GOWORK=off GOFLAGS= go mod download -json "$CONTAINERD_MODULE@$v" |
		awk -F'"' '$2 == "Dir" { print $4; exit }') || src=""
	[[ -n $src && -d $src ]] || die "go mod download of $CONTAINERD_MODULE@$v failed"
	cp -r "$src" "$tmp/src"
	chmod -R u+w "$tmp/src"
	(cd "$tmp/src" && quiet "build of containerd $v failed" \
		env GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" go build -o "$tmp/bin/" \
		./cmd/containerd ./cmd/containerd-shim-runc-v2)
	mkdir -p "$dest"
	for b in containerd containerd-shim-runc-v2; do
		have=$(containerd_bin_version "$tmp/bin/$b")
		[[ $have == "${v#v}" ]] || die "the $b built from $CONTAINERD_MODULE@$v reports version '$have'"
		install -m 0755 "$tmp/bin/$b" "$dest/.$b.rrc-new"
		mv -f "$dest/.$b.rrc-new" "$dest/$b"
	done
	printf '%s\n' "$v" >"$stamp"
	log "containerd $v installed in $dest (built in $((SECONDS - start)) s)"
}

setup_containerd_releases() {
	local v minor
	for v in "${CONTAINERD_RELEASES[@]}"; do
		minor=${v#v}
		minor=${minor%.*}
		install_containerd_release "$v" "$CONTAINERD_RELEASES_DIR/containerd-$minor/bin"
	done
}

setup_containerd_releases
