#!/usr/bin/env bash
# Builds the registry-redirect container image as an OCI image layout,
# without a container engine, with umoci (Debian package umoci).
#
# Usage: deploy/container/build-layout.sh BINARY OUT_DIR [TAG]
#
# The image has one layer with the same files as the Dockerfile's image:
#   /usr/local/bin/registry-redirect   BINARY, with its debug symbols stripped
#   the shared libraries BINARY needs, at the paths ldd reports, and the
#     dynamic loader, because the image has no base layer of its own
#   /etc/registry-redirect/config.toml deploy/container/config.toml
#   /usr/share/doc/registry-redirect/  the annotated example config and its
#                                      range file
#   /etc/passwd, /etc/group            the user and group "nonroot", 65532
# and the Dockerfile's configuration: user 65532:65532, entrypoint, command,
# exposed ports 5000 and 9090, and the OCI labels. The Dockerfile's
# HEALTHCHECK is a Docker extension that the OCI image configuration does
# not have, so this image lacks it; Kubernetes ignores it in any case.
#
# OUT_DIR is replaced. TAG defaults to "latest". Prints the manifest
# digest on the last line.
set -euo pipefail

if (($# < 2 || $# > 3)); then
    printf 'usage: %s BINARY OUT_DIR [TAG]\n' "$0" >&2
    exit 2
fi
binary=$1
out=$2
tag=${3:-latest}
repository_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

for tool in umoci ldd strip jq; do
    if ! command -v "$tool" >/dev/null; then
        printf 'build-layout.sh: %s is missing; install it with apt-get install -y umoci libc-bin binutils jq\n' "$tool" >&2
        exit 2
    fi
done
if [[ ! -x "$binary" ]]; then
    printf 'build-layout.sh: %s is not an executable file\n' "$binary" >&2
    exit 2
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
rootfs=$scratch/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/registry-redirect" \
    "$rootfs/usr/share/doc/registry-redirect" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

strip -o "$rootfs/usr/local/bin/registry-redirect" "$binary"
chmod 755 "$rootfs/usr/local/bin/registry-redirect"

# ldd prints "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" for each
# library and "/lib64/ld-linux-x86-64.so.2 (0x...)" for the loader. The
# vDSO has no file. cp -L copies the file a link points to under the
# link's own name, which is the name the loader looks for.
libraries=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
if [[ -z "$libraries" ]]; then
    printf 'build-layout.sh: ldd found no shared libraries in %s, so the image contains only the binary\n' "$binary" >&2
fi
for library in $libraries; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
done

cp "$repository_root/deploy/container/config.toml" "$rootfs/etc/registry-redirect/config.toml"
cp "$repository_root/registry-redirect-cli/examples/registry-redirect.toml" \
    "$rootfs/usr/share/doc/registry-redirect/registry-redirect.toml"
cp -r "$repository_root/registry-redirect-cli/examples/ranges" "$rootfs/usr/share/doc/registry-redirect/ranges"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"

version=$("$binary" --version | awk '{ print $2 }')
rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci unpack --image "$out:$tag" "$scratch/bundle" >/dev/null
cp -a "$rootfs/." "$scratch/bundle/rootfs/"
umoci repack --image "$out:$tag" "$scratch/bundle" \
    --history.created_by "deploy/container/build-layout.sh"
umoci config --image "$out:$tag" \
    --os linux \
    --architecture amd64 \
    --config.user 65532:65532 \
    --config.workingdir / \
    --config.exposedports 5000/tcp \
    --config.exposedports 9090/tcp \
    --config.entrypoint /usr/local/bin/registry-redirect \
    --config.cmd serve \
    --config.cmd --config \
    --config.cmd /etc/registry-redirect/config.toml \
    --config.cmd --admin-listen \
    --config.cmd 0.0.0.0:9090 \
    --config.stopsignal SIGTERM \
    --config.label org.opencontainers.image.title=registry-redirect \
    --config.label "org.opencontainers.image.description=OCI registry redirector" \
    --config.label org.opencontainers.image.source=https://github.com/registry-redirect/registry-redirect \
    --config.label org.opencontainers.image.licenses=Apache-2.0 \
    --config.label "org.opencontainers.image.version=$version"
umoci gc --layout "$out"

jq -r --arg tag "$tag" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest' \
    "$out/index.json"
