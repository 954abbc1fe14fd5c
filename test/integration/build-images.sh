#!/usr/bin/env bash
# Copyright The io.rrc.v1 Authors.
# SPDX-License-Identifier: Apache-2.0

# Builds local stand-ins for the images that containerd's integration/client
# tests pull (see docs/CONTAINERD-INTEGRATION.md), from Debian's static
# busybox, with contrib/imagebuild (one layer per image) and
# test/registry/cmd/ocicompose (multi-layer stacks, multi-platform indexes).
#
#   build-images.sh OUTDIR
#
# Writes into OUTDIR:
#   *.tar               OCI image archives
#   registry.args       "-image REF=ARCHIVE" arguments for test/registry/cmd/registry
# Needs: go, /bin/busybox (busybox-static). Env IMAGEBUILD / OCICOMPOSE may name
# prebuilt binaries of the two tools.
set -euo pipefail

OUT=${1:?usage: build-images.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
F=$OUT/files
rm -rf "$F" && mkdir -p "$F"

if [[ -z ${IMAGEBUILD:-} ]]; then
	IMAGEBUILD=$OUT/imagebuild
	(cd "$ROOT" && go build -o "$IMAGEBUILD" ./contrib/imagebuild)
fi
if [[ -z ${OCICOMPOSE:-} ]]; then
	OCICOMPOSE=$OUT/ocicompose
	(cd "$ROOT" && go build -o "$OCICOMPOSE" ./test/registry/cmd/ocicompose)
fi
BUSYBOX=${BUSYBOX:-/bin/busybox}
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || {
	echo "build-images: $BUSYBOX is not a static busybox (apt-get install busybox-static)" >&2
	exit 1
}

# The users and groups of the upstream busybox image: the tests rely on
# www-data (33) and sys (3).
cat >"$F/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
cat >"$F/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
# volume-ownership (upstream: ubuntu) runs as the "backup" user (34) and
# checks `bash -c "[ -u /usr/bin/passwd ]"`.
{ cat "$F/passwd"; echo 'backup:x:34:34:backup:/var/backups:/usr/sbin/nologin'; } >"$F/passwd-ubuntu"
{ cat "$F/group"; echo 'backup:x:34:'; } >"$F/group-ubuntu"
printf '#!/bin/sh\n# stand-in for bash: busybox sh\nexec /bin/sh "$@"\n' >"$F/bash"
chmod 0755 "$F/bash"
printf '#!/bin/sh\necho "passwd stand-in (setuid bit only)"\n' >"$F/passwd-bin"
chmod 4755 "$F/passwd-bin"
# Debian's busybox has the small nc, which installs no signal handler: as a
# container's PID 1 it ignores SIGTERM. Upstream's busybox image has the
# full nc, which exits with 128+15 (TestBindLowPortNonOpt kills it so).
cat >"$F/nc" <<'EOF'
#!/bin/sh
# nc as in upstream's busybox image: exit 143 on SIGTERM even as PID 1
trap 'exit 143' TERM
trap 'exit 130' INT
/bin/busybox nc "$@" &
wait $!
EOF
chmod 0755 "$F/nc"
for v in 3.10.2 3.6; do
	printf 'stand-in for the pause %s binary; never run by the client tests\n' "$v" >"$F/pause-$v"
	chmod 0755 "$F/pause-$v"
done
echo test_content >"$F/test_file"
: >"$F/empty"
echo delete-me >"$F/file-to-delete"

PATHENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ETC=("$F/passwd:/etc/passwd" "$F/group:/etc/group")
build() { "$IMAGEBUILD" "$@" >/dev/null; }
compose() { "$OCICOMPOSE" "$@" >/dev/null; }

# Linux platforms that the upstream multi-platform images also have.
EXTRA=linux/arm/v7,linux/arm64/v8,linux/386,linux/ppc64le,linux/riscv64,linux/s390x

# busybox: ghcr.io/containerd/busybox:1.36 (multi-platform index)
build -ref ghcr.io/containerd/busybox:1.36 -o "$F/busybox-amd64.tar" -busybox -cmd sh -env "$PATHENV" "${ETC[@]}" "$F/nc:/bin/nc"
compose multiplatform -o "$OUT/busybox.tar" -name ghcr.io/containerd/busybox:1.36 -platform "$EXTRA" "$F/busybox-amd64.tar"
BUSYBOX_DIGEST=$("$OCICOMPOSE" digest "$OUT/busybox.tar")

# registry.k8s.io/e2e-test-images/busybox:1.29-2 (TestImagePullSomePlatforms
# fetches linux/amd64, linux/arm64/v8 and linux/s390x from its index)
compose multiplatform -o "$OUT/e2e-busybox.tar" -name registry.k8s.io/e2e-test-images/busybox:1.29-2 \
	-platform linux/arm/v7,linux/arm64/v8,linux/ppc64le,linux/s390x "$F/busybox-amd64.tar"

# pause:3.10.2 (images.Pause) and pause:3.6 (hard-coded): multi-platform
# indexes; the client tests pull, unpack and account for them but never run
# them. Distinct content, as upstream.
for v in 3.10.2 3.6; do
	build -ref registry.k8s.io/pause:$v -o "$F/pause-$v-amd64.tar" -entrypoint /pause "$F/pause-$v:/pause"
	compose multiplatform -o "$OUT/pause-$v.tar" -name registry.k8s.io/pause:$v \
		-platform linux/arm/v7,linux/arm64/v8,linux/ppc64le,linux/s390x "$F/pause-$v-amd64.tar"
done

# volume-copy-up:2.2: busybox plus three layers, as upstream's Dockerfile
build -ref l1 -o "$F/vcu1.tar" "${ETC[@]}" "$F/test_file:/test_dir/test_file"
build -ref l2 -o "$F/vcu2.tar" "${ETC[@]}" "$F/test_file:/C:/weird_test_dir/weird_test_file"
build -ref l3 -o "$F/vcu3.tar" "${ETC[@]}" "$F/test_file:/:colon_prefixed/colon_prefixed_file"
compose stack -o "$F/vcu-amd64.tar" "$F/busybox-amd64.tar" "$F/vcu1.tar" "$F/vcu2.tar" "$F/vcu3.tar"
compose multiplatform -o "$OUT/volume-copy-up.tar" -name ghcr.io/containerd/volume-copy-up:2.2 \
	-platform linux/arm64/v8,linux/ppc64le "$F/vcu-amd64.tar"

# whiteout-test:1.0: a layer adds /file-to-delete and /dir-to-delete, the next
# one deletes them with whiteout entries (TestIssue13030)
build -ref w1 -o "$F/wh1.tar" "${ETC[@]}" "$F/file-to-delete:/file-to-delete" "$F/file-to-delete:/dir-to-delete/file"
build -ref w2 -o "$F/wh2.tar" "${ETC[@]}" "$F/empty:/.wh.file-to-delete" "$F/empty:/.wh.dir-to-delete"
compose stack -o "$OUT/whiteout.tar" -name ghcr.io/containerd/whiteout-test:1.0 "$F/busybox-amd64.tar" "$F/wh1.tar" "$F/wh2.tar"

# volume-ownership:2.1 (upstream: ubuntu + /test_dir): user backup, bash,
# setuid /usr/bin/passwd
build -ref ghcr.io/containerd/volume-ownership:2.1 -o "$OUT/volume-ownership.tar" -busybox -cmd sh -env "$PATHENV" \
	"$F/passwd-ubuntu:/etc/passwd" "$F/group-ubuntu:/etc/group" "$F/bash:/bin/bash" "$F/passwd-bin:/usr/bin/passwd" \
	"$F/test_file:/test_dir/.keep"

cat >"$OUT/registry.args" <<EOF
-image ghcr.io/containerd/busybox:1.36=$OUT/busybox.tar
-image registry.k8s.io/e2e-test-images/busybox:1.29-2=$OUT/e2e-busybox.tar
-image registry.k8s.io/pause:3.10.2=$OUT/pause-3.10.2.tar
-image registry.k8s.io/pause:3.6=$OUT/pause-3.6.tar
-image ghcr.io/containerd/volume-copy-up:2.2=$OUT/volume-copy-up.tar
-image ghcr.io/containerd/whiteout-test:1.0=$OUT/whiteout.tar
-image ghcr.io/containerd/volume-ownership:2.1=$OUT/volume-ownership.tar
EOF

echo "build-images: images in $OUT (busybox index $BUSYBOX_DIGEST)"
