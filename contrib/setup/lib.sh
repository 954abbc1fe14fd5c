# shellcheck shell=bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Shared helpers for contrib/setup/setup.sh. Sourced, not executed.

log()  { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die()  { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command quietly; on failure show its output and die with a message.
#   quiet "what failed" cmd args...
quiet() {
	local what=$1 out
	shift
	if ! out=$("$@" 2>&1); then
		printf '%s\n' "$out" >&2
		die "$what (command: $*)"
	fi
}

# Installed version of a Debian package, empty if it is not installed.
deb_version() {
	local st
	st=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null) || return 0
	[[ $st == ii* ]] && printf '%s\n' "${st#*|}"
	return 0
}

# version_ge A B: true if version A >= version B (Debian ordering).
version_ge() { dpkg --compare-versions "$1" ge "$2"; }

# Version printed by `criu --version` ("Version: 4.2.1"), empty if criu does not run.
criu_version() {
	local bin=${1:-criu}
	"$bin" --version 2>/dev/null | awk '/^Version:/ { print $2; exit }' || true
}

# Builds Go commands from the module proxy into DEST, unless DEST/.rrc-NAME already records
# VERSION (the binaries of `go install` do not know their own version).
#   go_install_pinned NAME VERSION DEST module/path/cmd/a module/path/cmd/b ...
go_install_pinned() {
	local name=$1 version=$2 dest=$3 stamp tmp start p pkgs=()
	shift 3
	stamp=$dest/.rrc-$name
	if [[ -r $stamp && $(<"$stamp") == "$version" ]]; then
		log "$name $version found in $dest"
		return 0
	fi
	command -v go >/dev/null || die "Go is needed to build $name $version: install Go to /usr/local/go"
	log "installing $name $version into $dest (go install from the Go module proxy)"
	tmp=$(mktemp -d "/tmp/rrc-setup-$name.XXXXXX")
	start=$SECONDS
	for p in "$@"; do pkgs+=("$p@$version"); done
	# Built outside the repository so that its go.mod plays no part.
	if ! (cd "$tmp" && quiet "go install of $name $version failed" \
		env GOBIN="$tmp/bin" GOFLAGS=-buildvcs=false GOWORK=off go install "${pkgs[@]}"); then
		rm -rf "$tmp"
		return 1
	fi
	mkdir -p "$dest"
	for p in "$tmp"/bin/*; do
		# Next to the target, then renamed: safe while an old binary runs.
		install -m 0755 "$p" "$dest/.${p##*/}.rrc-new"
		mv -f "$dest/.${p##*/}.rrc-new" "$dest/${p##*/}"
	done
	rm -rf "$tmp"
	printf '%s\n' "$version" >"$stamp"
	log "$name $version installed in $dest (built in $((SECONDS - start)) s)"
}
