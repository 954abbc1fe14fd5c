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

# ---------------------------------------------------------------- private apt
# Packages of Debian releases newer than the system's (trixie, forky), fetched with
# `apt-get download` through a private apt configuration and unpacked into a prefix of
# their own: the system's sources, lists, preferences and packages are never touched.
PRIVATE_APT_DIR=/var/lib/rrc/apt
PRIVATE_APT_MIRROR=${RRC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PRIVATE_APT_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PRIVATE_APT_OPTS=(
	-o "Dir::Etc::SourceList=$PRIVATE_APT_DIR/sources.list"
	-o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$PRIVATE_APT_DIR/lists"
	-o "Dir::Cache=$PRIVATE_APT_DIR/cache"
	-o Dir::Etc::Preferences=/dev/null
	-o Dir::Etc::PreferencesParts=/dev/null
	-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
	-o Acquire::Languages=none
)

# Writes the private sources (trixie and forky) and fetches their package lists. Holds a
# lock on the private configuration until private_apt_done, so that two setups running at
# once do not share the lists.
private_apt_update() {
	[[ -r $PRIVATE_APT_KEYRING ]] || die "$PRIVATE_APT_KEYRING missing (package debian-archive-keyring)"
	mkdir -p "$PRIVATE_APT_DIR/lists/partial" "$PRIVATE_APT_DIR/cache/archives/partial"
	exec {PRIVATE_APT_LOCK}>"$PRIVATE_APT_DIR/lock"
	flock -w 600 "$PRIVATE_APT_LOCK" || die "another setup holds $PRIVATE_APT_DIR/lock"
	cat >"$PRIVATE_APT_DIR/sources.list" <<-EOS
		# io.rrc.v1 private apt sources: only used by contrib/setup/setup.sh with
		# apt-get -o Dir::Etc::SourceList=...; not part of the system's apt configuration.
		deb [signed-by=$PRIVATE_APT_KEYRING] $PRIVATE_APT_MIRROR trixie main
		deb [signed-by=$PRIVATE_APT_KEYRING] $PRIVATE_APT_MIRROR forky main
	EOS
	quiet "apt-get update of the private trixie/forky lists failed" \
		apt-get "${PRIVATE_APT_OPTS[@]}" -q update
}

# The package lists (~40 MB) are only needed for a download: removed, lock released.
private_apt_done() {
	rm -rf "$PRIVATE_APT_DIR/lists" "$PRIVATE_APT_DIR/cache"
	if [[ -n ${PRIVATE_APT_LOCK:-} ]]; then
		exec {PRIVATE_APT_LOCK}>&-
		PRIVATE_APT_LOCK=
	fi
}

# Version of PKG/RELEASE (e.g. criu/forky) in the private lists, empty if there is none.
private_apt_version() {
	apt-cache "${PRIVATE_APT_OPTS[@]}" show "$1" 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}

# Downloads PKG... (name=version or name/release) and unpacks them into DEST, which must
# not exist yet, with DEST/MANIFEST listing "package version" of each.
#   private_apt_unpack DEST PKG...
private_apt_unpack() {
	local dest=$1 tmp
	shift
	tmp=$(mktemp -d /tmp/rrc-setup-debs.XXXXXX)
	id _apt >/dev/null 2>&1 && chown _apt "$tmp" # let apt's sandbox user write there
	if ! (cd "$tmp" && quiet "apt-get download of $* failed" \
		apt-get "${PRIVATE_APT_OPTS[@]}" -q download "$@"); then
		rm -rf "$tmp"
		return 1
	fi
	unpack_debs "$tmp" "$dest" "$dest/MANIFEST"
	rm -rf "$tmp"
}

# Downloads bookworm's PKG... with the system's apt configuration (its lists, updated only
# when the download fails without) and unpacks them into DEST/root, listed in DEST/MANIFEST:
# how packages whose installation would start a system service are used (etcd, the registry).
#   apt_unpack DEST PKG...
apt_unpack() {
	local dest=$1 tmp
	shift
	tmp=$(mktemp -d /tmp/rrc-setup-debs.XXXXXX)
	CLEANUP+=("rm -rf '$tmp'")
	id _apt >/dev/null 2>&1 && chown _apt "$tmp" # let apt's sandbox user write there
	if ! (cd "$tmp" && apt-get -q download "$@" >/dev/null 2>&1); then
		quiet "apt-get update failed" apt-get -q update
		(cd "$tmp" && quiet "apt-get download $* failed" apt-get -q download "$@")
	fi
	unpack_debs "$tmp" "$dest/root" "$dest/MANIFEST"
}

# Unpacks every .deb of DIR into DEST (dpkg-deb -x: no maintainer script runs) and lists
# "package version" of each, sorted, in MANIFEST.
#   unpack_debs DIR DEST MANIFEST
unpack_debs() {
	local dir=$1 dest=$2 manifest=$3 deb
	mkdir -p "$dest"
	for deb in "$dir"/*.deb; do
		dpkg-deb -x "$deb" "$dest"
		dpkg-deb -f "$deb" Package Version | awk '{ printf "%s%s", $2, (NR % 2 ? " " : "\n") }' >>"$manifest"
	done
	sort -o "$manifest" "$manifest"
}

# Replaces the directory PREFIX by NEW (same file system), removing the old one.
#   swap_prefix NEW PREFIX
swap_prefix() {
	local new=$1 prefix=$2
	if [[ -e $prefix ]]; then
		rm -rf "$prefix.old"
		mv "$prefix" "$prefix.old"
	fi
	mv "$new" "$prefix"
	rm -rf "$prefix.old"
}
