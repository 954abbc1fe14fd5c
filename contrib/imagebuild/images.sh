#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Builds the project's standard images as OCI archives into DIR:
#   DIR/busybox.tar  rrc.local/busybox:latest  static busybox + applet links
#   DIR/redis.tar    rrc.local/redis:latest    redis-server, redis-cli, busybox;
#                    entrypoint redis-server, cmd $REDIS_CMD
#   DIR/threadkv.tar rrc.local/threadkv:latest  contrib/workloads/threadkv, a
#                    static multi-threaded Go server speaking the Redis protocol
#                    on port 6379 (built here with GO, CGO_ENABLED=0)
#   DIR/lighttpd.tar rrc.local/lighttpd:latest  Debian's lighttpd on port 80
#                    serving /srv/www: f01..f20 (1-27 KB) and big (10 MB),
#                    each its name's line repeated (test/lab WWWFile)
#   DIR/memcached.tar rrc.local/memcached:latest  Debian's memcached on port 11211,
#                    four worker threads (-t 4), 64 MB, running as root
#   DIR/nondet.tar   rrc.local/nondet:latest  contrib/workloads/nondet, a static Go
#                    line-protocol server on port 7000 whose TIME and RAND
#                    replies differ from run to run (built like threadkv)
#   DIR/pause.tar    rrc.local/pause:latest  contrib/workloads/pause, the sandbox
#                    container of CRI pods: sleeps until SIGTERM (built like threadkv)
# An archive is rebuilt only when an input (host binary, builder source, this
# script) is newer than it. Import with: ctr -n NS images import DIR/redis.tar
#
#   contrib/imagebuild/images.sh DIR
#
# Environment: REDIS_CMD (comma-separated redis-server arguments, empty
# elements kept; default: --bind,0.0.0.0,--protected-mode,no,--save,,--appendonly,no),
# BUSYBOX (default /bin/busybox), REDIS_SERVER, REDIS_CLI, LIGHTTPD, MEMCACHED,
# GO (go binary).
set -euo pipefail

[[ $# == 1 && -n $1 ]] || { sed -n '5,26p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SELF=$HERE/images.sh
BUSYBOX=${BUSYBOX:-/bin/busybox}
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=${REDIS_CLI:-/usr/bin/redis-cli}
LIGHTTPD=${LIGHTTPD:-/usr/sbin/lighttpd}
MEMCACHED=${MEMCACHED:-/usr/bin/memcached}
REDIS_CMD=${REDIS_CMD---bind,0.0.0.0,--protected-mode,no,--save,,--appendonly,no}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

say() { [[ ${LAB_QUIET:-} == 1 ]] || echo "images: $*" >&2; }

# stale OUT INPUT...: true when OUT is missing or older than an input.
stale() {
	local out=$1 in
	shift
	[[ -e $out ]] || return 0
	for in in "$@"; do
		[[ -e $in ]] || { echo "images: missing input $in" >&2; exit 1; }
		# -nt follows symlinks
		[[ $in -nt $out ]] && return 0
	done
	return 1
}

mkdir -p "$OUT"
TOOL=$OUT/.bin/imagebuild
mapfile -t SRCS < <(find "$HERE" -name '*.go' ! -name '*_test.go')
if stale "$TOOL" "${SRCS[@]}" "$REPO/go.mod"; then
	say "build $TOOL"
	mkdir -p "$OUT/.bin"
	(cd "$REPO" && "$GO" build -o "$TOOL.tmp.$$" ./contrib/imagebuild)
	mv -f "$TOOL.tmp.$$" "$TOOL"
fi

build() { # OUTFILE INPUTS... -- ARGS...
	local out=$1 inputs=()
	shift
	while [[ $1 != -- ]]; do inputs+=("$1"); shift; done
	shift
	if stale "$out" "$TOOL" "$SELF" "${inputs[@]}"; then
		say "build $out"
		"$TOOL" -o "$out" "$@" >/dev/null
	else
		say "up to date: $out"
	fi
}

build "$OUT/busybox.tar" "$BUSYBOX" -- \
	-ref rrc.local/busybox:latest -busybox -busybox-bin "$BUSYBOX" -cmd /bin/sh

# The redis cmd is part of this script (and REDIS_CMD): record it so that a
# change of REDIS_CMD rebuilds.
echo "$REDIS_CMD" >"$OUT/.redis_cmd.new.$$"
if ! cmp -s "$OUT/.redis_cmd.new.$$" "$OUT/.redis_cmd" 2>/dev/null; then
	mv -f "$OUT/.redis_cmd.new.$$" "$OUT/.redis_cmd"
else
	rm -f "$OUT/.redis_cmd.new.$$"
fi
build "$OUT/redis.tar" "$BUSYBOX" "$REDIS_SERVER" "$REDIS_CLI" "$OUT/.redis_cmd" -- \
	-ref rrc.local/redis:latest -busybox -busybox-bin "$BUSYBOX" \
	-entrypoint /usr/bin/redis-server -cmd "$REDIS_CMD" \
	"$REDIS_SERVER:/usr/bin/redis-server" "$REDIS_CLI:/usr/bin/redis-cli"

# go_workload NAME: contrib/workloads/NAME built with the go toolchain,
# static, into $OUT/.bin/NAME (when a source is newer).
go_workload() {
	local name=$1 bin=$OUT/.bin/$1 srcs
	mapfile -t srcs < <(find "$REPO/contrib/workloads/$name" -name '*.go' ! -name '*_test.go')
	if stale "$bin" "${srcs[@]}" "$REPO/go.mod"; then
		say "build $bin"
		mkdir -p "$OUT/.bin"
		(cd "$REPO" && CGO_ENABLED=0 "$GO" build -trimpath -o "$bin.tmp.$$" "./contrib/workloads/$name")
		mv -f "$bin.tmp.$$" "$bin"
	fi
}

# threadkv: built from its source with the go toolchain, static.
go_workload threadkv
THREADKV=$OUT/.bin/threadkv
build "$OUT/threadkv.tar" "$THREADKV" -- \
	-ref rrc.local/threadkv:latest -entrypoint /usr/bin/threadkv -cmd=-addr,:6379 \
	"$THREADKV:/usr/bin/threadkv"

# nondet: the deliberately nondeterministic server of the hybrid tests.
go_workload nondet
NONDET=$OUT/.bin/nondet
build "$OUT/nondet.tar" "$NONDET" -- \
	-ref rrc.local/nondet:latest -entrypoint /usr/bin/nondet -cmd=-addr,:7000 \
	"$NONDET:/usr/bin/nondet"

# pause: the sandbox image of containerd's CRI plugin in the lab (LAB_CRI=1),
# which cannot pull registry.k8s.io/pause here.
go_workload pause
PAUSE=$OUT/.bin/pause
build "$OUT/pause.tar" "$PAUSE" -- \
	-ref rrc.local/pause:latest -entrypoint /pause "$PAUSE:/pause"

# memcached: Debian's, with several worker threads (-t 4) so that a
# checkpoint and a replay meet a multi-threaded server; -u root because it
# refuses to run as root otherwise (the container's root); no UDP.
if [[ -x $MEMCACHED ]]; then
	build "$OUT/memcached.tar" "$MEMCACHED" -- \
		-ref rrc.local/memcached:latest -busybox -busybox-bin "$BUSYBOX" \
		-entrypoint /usr/bin/memcached -cmd=-u,root,-t,4,-p,11211,-U,0,-l,0.0.0.0,-m,64,-c,1024 \
		"$MEMCACHED:/usr/bin/memcached"
else
	echo "images: $MEMCACHED missing (make setup installs memcached): rrc.local/memcached not built" >&2
fi

# lighttpd: static files whose content the clients can check byte by byte
# (test/lab/www.go makes the same bytes): file NAME of SIZE bytes is the
# line "rrc-www NAME 0123456789abcdefghijklmnopqrstuvwxyz\n" repeated and
# cut at SIZE. Sizes: f01..f20 from 1 KiB to 27 KiB in steps of 1368 bytes,
# big 10 MiB.
WWW=$OUT/.www
www_file() { # NAME SIZE
	local line="rrc-www $1 0123456789abcdefghijklmnopqrstuvwxyz"
	{ yes "$line" || true; } | head -c "$2" >"$WWW/$1.tmp"
	mv -f "$WWW/$1.tmp" "$WWW/$1"
}
WWW_FILES=()
if [[ -x $LIGHTTPD ]]; then
	if stale "$WWW/.done" "$SELF"; then
		mkdir -p "$WWW"
		for i in $(seq 1 20); do www_file "$(printf f%02d "$i")" $((1024 + (i - 1) * 1368)); done
		www_file big $((10 * 1024 * 1024))
		touch "$WWW/.done"
	fi
	# No modules, raw files; keep-alive for as many requests as lighttpd
	# counts (16 bits: a larger value wraps around, 1000000 closed
	# connections after 16960).
	cat >"$WWW/lighttpd.conf.new.$$" <<'CONF'
server.document-root = "/srv/www"
server.port = 80
server.bind = "0.0.0.0"
server.modules = ()
server.max-keep-alive-requests = 65535
server.max-keep-alive-idle = 600
server.stat-cache-engine = "simple"
server.errorlog = "/dev/stderr"
mimetype.assign = ("" => "application/octet-stream")
CONF
	if ! cmp -s "$WWW/lighttpd.conf.new.$$" "$WWW/lighttpd.conf" 2>/dev/null; then
		mv -f "$WWW/lighttpd.conf.new.$$" "$WWW/lighttpd.conf"
	else
		rm -f "$WWW/lighttpd.conf.new.$$"
	fi
	for f in "$WWW"/f?? "$WWW/big"; do WWW_FILES+=("$f:/srv/www/${f##*/}"); done
	build "$OUT/lighttpd.tar" "$LIGHTTPD" "$WWW/.done" "$WWW/lighttpd.conf" -- \
		-ref rrc.local/lighttpd:latest -busybox -busybox-bin "$BUSYBOX" \
		-entrypoint /usr/sbin/lighttpd -cmd=-D,-f,/etc/lighttpd/lighttpd.conf \
		"$LIGHTTPD:/usr/sbin/lighttpd" "$WWW/lighttpd.conf:/etc/lighttpd/lighttpd.conf" "${WWW_FILES[@]}"
else
	echo "images: $LIGHTTPD missing (make setup installs lighttpd): rrc.local/lighttpd not built" >&2
fi
