#!/usr/bin/env bash
# End-to-end test of the container image, without a container engine.
#
# deploy/container/build-layout.sh builds the image as an OCI image layout
# from the binary under test. skopeo pushes it to a registry (Debian's
# docker-registry) and pulls it back through registry-redirect, which
# redirects every request to that registry. The pulled manifest must have
# the digest that was built. umoci then unpacks the pulled image. The
# binary inside runs from the image's root file system, in a chroot as the
# image's user 65532: --version, `check` on the image's policy, and `serve`,
# which must redirect a request. Last, `health` (the image's HEALTHCHECK)
# checks that server's admin listener.
#
# Every address is on loopback, in 127.0.0.0/8: a random 127.X.Y.0/24 per
# run keeps runs apart without picking ports. The redirects that `serve`
# returns name registry.k8s.io, but nothing requests them.
#
# Usage: image.sh PATH_TO_REGISTRY_REDIRECT
#        (or set REGISTRY_REDIRECT_BIN instead of passing the path)
# Needs: root (chroot), docker-registry, skopeo, umoci, curl, jq, strip,
#        ldd, timeout.
# Set REGISTRY_REDIRECT_E2E_KEEP=1 to keep the temp dir with all logs.
#
# The last line is "N passed, M failed"; the exit status is 0 only when
# every check passed.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly TAG=test
readonly REPOSITORY=registry-redirect
readonly REPOSITORY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
readonly IMAGE_USER=65532:65532

require_redirector_bin "${1:-}"
check_prerequisites
for tool in umoci:umoci chroot:coreutils strip:binutils ldd:libc-bin; do
    command -v "${tool%%:*}" >/dev/null ||
        die "missing tool ${tool%%:*}; install it with apt-get install -y --no-install-recommends ${tool#*:}"
done
create_workdir
write_skopeo_policy

readonly NET=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))
readonly REGISTRY=$NET.1:5000
readonly REDIRECTOR=$NET.2:5000
readonly IMAGE_SERVER=$NET.3:5000
readonly IMAGE_ADMIN=$NET.3:9090
say "registry on $REGISTRY, redirector on $REDIRECTOR"

# --- build -----------------------------------------------------------------

layout=$workdir/layout
built_digest=$("$REPOSITORY_ROOT/deploy/container/build-layout.sh" \
    "$redirector_bin" "$layout" "$TAG" 2>"$workdir/logs/build-layout.log" | tail -n 1) ||
    die "build-layout.sh failed (see build-layout.log below)"
say "built $built_digest"

manifest=$layout/blobs/sha256/${built_digest#sha256:}
config=$layout/blobs/sha256/$(jq -r '.config.digest' "$manifest" | cut -d: -f2)
check_eq "layout has oci-layout 1.0.0" "1.0.0" "$(jq -r '.imageLayoutVersion' "$layout/oci-layout")"
check_eq "image user is non-root" "$IMAGE_USER" "$(jq -r '.config.User' "$config")"
check_eq "image entrypoint is the binary" '["/usr/local/bin/registry-redirect"]' \
    "$(jq -c '.config.Entrypoint' "$config")"
check_eq "image command serves the config" \
    '["serve","--config","/etc/registry-redirect/config.toml","--admin-listen","0.0.0.0:9090"]' \
    "$(jq -c '.config.Cmd' "$config")"
check_eq "image exposes registry and admin ports" '["5000/tcp","9090/tcp"]' \
    "$(jq -c '.config.ExposedPorts | keys' "$config")"
check_eq "image has a title label" "registry-redirect" \
    "$(jq -r '.config.Labels["org.opencontainers.image.title"]' "$config")"
check_eq "image is linux/amd64" "linux/amd64" "$(jq -r '"\(.os)/\(.architecture)"' "$config")"

# --- push, and pull through the redirector ------------------------------------

start_registry origin "$REGISTRY"
push_image origin "$layout" "$REGISTRY"
check_eq "registry stores the built manifest" "$built_digest" "$(stored_digest "$REGISTRY")"

redirector_config=$workdir/redirector.toml
cat >"$redirector_config" <<EOF
default_upstream = "origin"

[upstreams.origin]
url = "http://$REGISTRY"
EOF
start_redirector registry-redirect "$redirector_config" "$REDIRECTOR"

pulled=$workdir/pulled
if timeout "$SKOPEO_TIMEOUT_SECS" skopeo --policy "$SKOPEO_POLICY" copy --quiet \
    --src-tls-verify=false --src-no-creds \
    "docker://$REDIRECTOR/$REPOSITORY:$TAG" "oci:$pulled:$TAG" \
    >"$workdir/logs/pull.log" 2>&1; then
    pass "skopeo pulls the image through registry-redirect"
else
    fail "skopeo pulls the image through registry-redirect" \
        "skopeo failed: $(tail -n 5 "$workdir/logs/pull.log" | tr '\n' ' ')"
fi
pulled_digest=$(jq -r '.manifests[0].digest // "none"' "$pulled/index.json" 2>/dev/null || echo none)
check_eq "pulled manifest has the built digest" "$built_digest" "$pulled_digest"

wait_for_quiet_log "$workdir/logs/registry-redirect.log"
check_eq "redirector redirected the manifest request" 1 \
    "$(grep -c "/v2/$REPOSITORY/manifests/$TAG" "$workdir/logs/registry-redirect.log" | awk '{ print ($1 > 0) }')"
check_eq "redirector redirected blob requests" 1 \
    "$(grep -c "/v2/$REPOSITORY/blobs/sha256:" "$workdir/logs/registry-redirect.log" | awk '{ print ($1 > 0) }')"

# --- run the pulled image ------------------------------------------------------

bundle=$workdir/bundle
umoci unpack --image "$pulled:$TAG" "$bundle" >"$workdir/logs/unpack.log" 2>&1 ||
    die "umoci could not unpack the pulled image (see unpack.log below)"
rootfs=$bundle/rootfs

# in_image COMMAND...: runs COMMAND inside the image's root file system as
# the image's user, with a time limit.
in_image() {
    timeout 20 chroot --userspec="$IMAGE_USER" "$rootfs" "$@"
}

check_eq "binary in the image prints the version" \
    "$("$redirector_bin" --version)" "$(in_image /usr/local/bin/registry-redirect --version 2>&1)"
if in_image /usr/local/bin/registry-redirect check /etc/registry-redirect/config.toml \
    >"$workdir/logs/check.log" 2>&1; then
    pass "binary in the image accepts the image's policy"
else
    fail "binary in the image accepts the image's policy" "$(tr '\n' ' ' <"$workdir/logs/check.log")"
fi
if in_image /usr/local/bin/registry-redirect check \
    /usr/share/doc/registry-redirect/registry-redirect.toml >"$workdir/logs/check-example.log" 2>&1; then
    pass "binary in the image accepts the annotated example"
else
    fail "binary in the image accepts the annotated example" "$(tr '\n' ' ' <"$workdir/logs/check-example.log")"
fi

# The image's policy with the test's address: it has no upstream checks, so
# the server sends nothing anywhere.
chroot --userspec="$IMAGE_USER" "$rootfs" /usr/local/bin/registry-redirect serve \
    --config /etc/registry-redirect/config.toml --listen "$IMAGE_SERVER" \
    --admin-listen "$IMAGE_ADMIN" \
    >"$workdir/logs/image-serve.stdout" 2>"$workdir/logs/image-serve.log" &
started_pid=$!
pids+=("$started_pid")
wait_for_http "registry-redirect in the image" "$started_pid" "http://$IMAGE_SERVER/v2/"
location=$(curl -s -o /dev/null --max-time "$CURL_TIMEOUT_SECS" -w '%{redirect_url}' \
    "http://$IMAGE_SERVER/v2/pause/manifests/3.10")
check_eq "server in the image redirects" \
    "https://registry.k8s.io/v2/pause/manifests/3.10" "$location"
check_eq "server in the image runs as the image's user" "65532" \
    "$(ps -o uid= -p "$started_pid" | tr -d ' ')"
if in_image /usr/local/bin/registry-redirect health --url "http://$IMAGE_ADMIN/readyz" \
    >"$workdir/logs/health.log" 2>&1; then
    pass "health in the image finds the server ready"
else
    fail "health in the image finds the server ready" "$(tr '\n' ' ' <"$workdir/logs/health.log")"
fi
stop_process "$started_pid"
health_status=0
in_image /usr/local/bin/registry-redirect health --url "http://$IMAGE_ADMIN/readyz" \
    >"$workdir/logs/health-stopped.log" 2>&1 || health_status=$?
check_eq "health in the image fails once the server stopped" 1 "$health_status"

summarize
