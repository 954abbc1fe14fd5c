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
