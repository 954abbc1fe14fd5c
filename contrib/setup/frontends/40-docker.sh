# shellcheck shell=bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Docker: dockerd and the docker client from Debian forky (bookworm's docker.io 20.10 knows
# no runtimeType in daemon.json), unpacked into a private prefix the way CRIU is
# (lib.sh, private_apt_*), with dockerd, docker and docker-proxy in $DOCKER_PREFIX/bin.
# Nothing is installed system-wide and no service is started: TestDockerFailover starts a
# dockerd per lab host. The binaries link only with libraries bookworm has (checked with
# ldd). Sourced by contrib/setup/setup.sh.
DOCKER_PREFIX=/opt/rrc/docker
DOCKER_TESTED=28.5.2+dfsg4-5 # the forky build TestDockerFailover passed with
DOCKER_PKGS=(docker.io docker-cli)
# bookworm's packages of the libraries dockerd links with (ldd)
DOCKER_BOOKWORM_LIBS=(libsystemd0 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1)
DOCKER_BINS=(usr/sbin/dockerd usr/bin/docker usr/sbin/docker-proxy)

# Version a dockerd reports ("28.5.2+dfsg4"), empty if it does not run.
dockerd_version() {
	[[ -x $1 ]] || return 0
	"$1" --version 2>/dev/null | awk '{ sub(",", "", $3); print $3; exit }' || true
}

install_docker() {
	local new v p b out missing=()
	for p in "${DOCKER_BOOKWORM_LIBS[@]}"; do
		[[ -n $(deb_version "$p") ]] || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "installing ${missing[*]} (apt; libraries of dockerd)"
		quiet "apt-get update failed" apt-get -q update
		quiet "apt-get install ${missing[*]} failed" apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi

	private_apt_update
	v=$(private_apt_version docker.io/forky)
	[[ -n $v ]] || die "Debian forky has no docker.io package (mirror $PRIVATE_APT_MIRROR)"
	[[ $v == "$DOCKER_TESTED" ]] || warn "forky now ships docker.io $v; $DOCKER_TESTED is the tested one; using $v"
	new=$DOCKER_PREFIX.new
	rm -rf "$new"
	CLEANUP+=("rm -rf '$new'")
	private_apt_unpack "$new" "${DOCKER_PKGS[@]/%//forky}"
	private_apt_done

	# Every library from the system, before switching over.
	for b in "${DOCKER_BINS[@]}"; do
		[[ -x $new/$b ]] || die "$b missing from the unpacked docker packages"
		out=$(ldd "$new/$b" 2>&1) || { printf '%s\n' "$out" >&2; die "ldd $b failed"; }
		if grep -q 'not found' <<<"$out"; then
			printf '%s\n' "$out" >&2
			die "the unpacked $b misses libraries (see above)"
		fi
	done
	mkdir -p "$new/bin"
	for b in "${DOCKER_BINS[@]}"; do ln -s "../$b" "$new/bin/${b##*/}"; done
	[[ -n $(dockerd_version "$new/bin/dockerd") ]] || die "the unpacked dockerd does not run"
	swap_prefix "$new" "$DOCKER_PREFIX"
}

setup_docker() {
	local have
	have=$(dockerd_version "$DOCKER_PREFIX/bin/dockerd")
	if [[ -n $have && -x $DOCKER_PREFIX/bin/docker ]]; then
		log "dockerd $have found in $DOCKER_PREFIX/bin"
		return 0
	fi
	log "installing dockerd and docker (forky's docker.io and docker-cli, into $DOCKER_PREFIX)"
	install_docker
	have=$(dockerd_version "$DOCKER_PREFIX/bin/dockerd")
	log "dockerd $have installed in $DOCKER_PREFIX/bin ($(tr '\n' ' ' <"$DOCKER_PREFIX/MANIFEST"))"
}

setup_docker
