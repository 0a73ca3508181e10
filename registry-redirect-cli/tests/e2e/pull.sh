#!/usr/bin/env bash
# End-to-end test: real clients pull an image through registry-redirect.
#
# Two client networks (network namespaces with veth pairs) pull one tag
# with skopeo through the redirector. The config sends the client network B
# to registry B and everything else to registry A. Each registry (Debian's
# docker-registry, distribution 2.8) stores a different image under the same
# tag, so the pulled manifest digest shows which registry served the client.
# The registries' access logs and the redirector's log must agree with it.
# curl then checks the raw responses: HEAD redirects with 307 and no body,
# and an upload (POST) is rejected with 405.
#
# Usage: pull.sh PATH_TO_REGISTRY_REDIRECT
#        (or set REGISTRY_REDIRECT_BIN instead of passing the path)
# Needs: root (network namespaces), ip, docker-registry, skopeo, curl, jq,
#        tar, gzip, sha256sum, timeout.
# Set REGISTRY_REDIRECT_E2E_KEEP=1 to keep the temp dir with all logs.
#
# The last line is "N passed, M failed"; the exit status is 0 only when
# every check passed. On exit (success, failure or SIGINT/SIGTERM) the trap
# stops every process, namespace, link and temp dir the script made.
set -euo pipefail

readonly TAG=1.0
readonly REPOSITORY=e2e/hello
readonly REDIRECTOR_PORT=15000
readonly REGISTRY_A_PORT=15001
readonly REGISTRY_B_PORT=15002
readonly STARTUP_TIMEOUT_SECS=30
readonly SKOPEO_TIMEOUT_SECS=120
readonly CURL_TIMEOUT_SECS=10

# Everything this script creates, for cleanup.
pids=()
namespaces=()
links=()
workdir=""

passed=0
failed=0

say() {
    printf 'e2e: %s\n' "$*"
}

pass() {
    passed=$((passed + 1))
    printf 'ok    %s\n' "$1"
}

# fail CHECK DETAIL: records a failed check. The run goes on, so the summary
# lists every failure.
fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n      %s\n' "$1" "$2"
}

# check_eq CHECK EXPECTED ACTUAL
check_eq() {
    if [[ "$2" == "$3" ]]; then
        pass "$1"
    else
        fail "$1" "expected '$2', got '$3'"
    fi
}

show_logs() {
    local file
    [[ -n "$workdir" && -d "$workdir/logs" ]] || return 0
    for file in "$workdir"/logs/*; do
        if [[ -s "$file" ]]; then
            printf -- '--- last lines of %s ---\n' "${file##*/}"
            tail -n 12 "$file" | cut -c 1-400
        fi
    done
}

# die MESSAGE: a setup step failed, so no check after it can run.
die() {
    show_logs
    printf 'e2e: setup failed: %s\n' "$*"
    printf '%s passed, %s failed\n' "$passed" "$((failed + 1))"
    exit 1
}

stop_process() {
    local pid=$1 waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    # Bounded: 50 x 0.1 s, then SIGKILL.
    while kill -0 "$pid" 2>/dev/null && ((waited < 50)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM

    local pid ns link
    for pid in "${pids[@]}"; do
        stop_process "$pid"
    done
    for ns in "${namespaces[@]}"; do
        # Only this script starts processes in its namespaces, so any
        # left (a skopeo cut short by a signal) is one of ours.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
        ip netns delete "$ns" 2>/dev/null
    done
    # Deleting a namespace deletes the veth end inside it and with it the
    # host end. Deleting again covers links whose namespace was never made.
    for link in "${links[@]}"; do
        ip link delete "$link" 2>/dev/null
    done

    if [[ -n "$workdir" && -d "$workdir" ]]; then
        if [[ "${REGISTRY_REDIRECT_E2E_KEEP:-0}" == 1 ]]; then
            say "kept $workdir"
        else
            rm -rf "$workdir"
        fi
    fi
    exit "$status"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- prerequisites ---------------------------------------------------------

check_prerequisites() {
    local missing=() tool package
    # tool:Debian package that provides it
    for tool in ip:iproute2 docker-registry:docker-registry skopeo:skopeo \
        curl:curl jq:jq tar:tar gzip:gzip sha256sum:coreutils \
        timeout:coreutils; do
        package=${tool#*:}
        tool=${tool%%:*}
        if ! command -v "$tool" >/dev/null 2>&1; then
            missing+=("$tool (Debian package $package)")
        fi
    done
    if ((${#missing[@]} > 0)); then
        die "missing tools: ${missing[*]}; install them with apt-get install -y --no-install-recommends <package>"
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        die "must run as root to create network namespaces (running as uid $(id -u))"
    fi
}

redirector_bin=${1:-${REGISTRY_REDIRECT_BIN:-}}
if [[ -z "$redirector_bin" ]]; then
    die "no registry-redirect binary: pass its path as the first argument or set REGISTRY_REDIRECT_BIN"
fi
if [[ ! -x "$redirector_bin" ]]; then
    die "registry-redirect binary '$redirector_bin' does not exist or is not executable"
fi
check_prerequisites

workdir=$(mktemp -d -t registry-redirect-e2e.XXXXXX)
mkdir -p "$workdir/logs"
say "temp dir $workdir"

# --- addresses --------------------------------------------------------------

# Each run takes the first free slot of four /24s in 10.200.0.0/16, so it
# never meets the addresses of another run or of a run that was killed.
# Within slot S:
#   10.200.S.1/32     the services (registries and redirector), host only
#   10.200.S+1.0/24   client network A (host .1, namespace .2)
#   10.200.S+2.0/24   client network B (host .1, namespace .2)
pick_subnet_slot() {
    local used slot octet
    used=$(ip -4 -o address show; ip -4 route show table all)
    for ((slot = 0; slot < 64; slot++)); do
        octet=$((slot * 4))
        if ! grep -Eq "10\.200\.($octet|$((octet + 1))|$((octet + 2)))\." <<<"$used"; then
            echo "$octet"
            return 0
        fi
    done
    return 1
}

octet=$(pick_subnet_slot) || die "no free /24 left in 10.200.0.0/16 for the test networks"
readonly SERVICE_IP=10.200.$octet.1
readonly NET_A=10.200.$((octet + 1))
readonly NET_B=10.200.$((octet + 2))
readonly CLIENT_A_IP=$NET_A.2
readonly CLIENT_B_IP=$NET_B.2
readonly REGISTRY_A=$SERVICE_IP:$REGISTRY_A_PORT
readonly REGISTRY_B=$SERVICE_IP:$REGISTRY_B_PORT
readonly REDIRECTOR=$SERVICE_IP:$REDIRECTOR_PORT

# Interface names are at most 15 bytes, and "rr" + PID (<= 7 digits) + 3 fit.
readonly PREFIX=rr$$
readonly NS_A=${PREFIX}-a
readonly NS_B=${PREFIX}-b
readonly LINK_SERVICE=${PREFIX}s0
readonly LINK_SERVICE_PEER=${PREFIX}s1

# --- network ---------------------------------------------------------------

# The service address sits on a veth pair kept entirely on the host, because
# the kernel may lack the dummy link type. The host delivers packets for any
# of its own addresses locally, so clients reach it through their veth link
# without IP forwarding. The script changes no default route, iptables rule
# or sysctl.
setup_service_address() {
    links+=("$LINK_SERVICE")
    ip link add "$LINK_SERVICE" type veth peer name "$LINK_SERVICE_PEER"
    ip address add "$SERVICE_IP/32" dev "$LINK_SERVICE"
    ip link set "$LINK_SERVICE" up
    ip link set "$LINK_SERVICE_PEER" up
}

# setup_client_namespace NAMESPACE NETWORK (first three octets)
setup_client_namespace() {
    local ns=$1 net=$2
    local host_end=${ns}h ns_end=${ns}n

    namespaces+=("$ns")
    links+=("$host_end")
    ip netns add "$ns"
    ip link add "$host_end" type veth peer name "$ns_end" netns "$ns"

    ip address add "$net.1/24" dev "$host_end"
    ip link set "$host_end" up

    ip -n "$ns" link set lo up
    ip -n "$ns" address add "$net.2/24" dev "$ns_end"
    ip -n "$ns" link set "$ns_end" up
    # The only route out of the namespace leads to the service address.
    ip -n "$ns" route add "$SERVICE_IP/32" via "$net.1"
}

say "network: services on $SERVICE_IP, client A $CLIENT_A_IP in $NS_A, client B $CLIENT_B_IP in $NS_B"
setup_service_address || die "could not create the service link $LINK_SERVICE"
setup_client_namespace "$NS_A" "$NET_A" || die "could not create namespace $NS_A"
setup_client_namespace "$NS_B" "$NET_B" || die "could not create namespace $NS_B"

# --- images ----------------------------------------------------------------

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

size_of() {
    stat -c %s "$1"
}

# add_blob LAYOUT FILE: moves FILE into LAYOUT's blob store, prints its digest.
add_blob() {
    local layout=$1 file=$2 hex
    hex=$(sha256_of "$file")
    mkdir -p "$layout/blobs/sha256"
    mv "$file" "$layout/blobs/sha256/$hex"
    echo "sha256:$hex"
}

# make_layer DIR OUT.tar.gz: writes a reproducible gzip tar of DIR and prints
# "DIGEST SIZE DIFF_ID".
make_layer() {
    local dir=$1 out=$2
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -C "$dir" -cf "$out.tar" .
    gzip -n -c "$out.tar" >"$out"
    echo "sha256:$(sha256_of "$out") $(size_of "$out") sha256:$(sha256_of "$out.tar")"
    rm "$out.tar"
}

# build_image LAYOUT MARKER: writes an OCI image layout with two layers (one
# shared by both images, one naming MARKER) tagged $TAG, and prints the
# manifest digest.
build_image() {
    local layout=$1 marker=$2
    local build=$workdir/build-$marker
    local base_digest base_size base_diff marker_digest marker_size marker_diff
    local config config_digest manifest manifest_digest

    mkdir -p "$layout" "$build/base/etc" "$build/marker"
    printf 'hello from the registry-redirect end-to-end test\n' >"$build/base/hello.txt"
    printf 'ID=e2e\n' >"$build/base/etc/os-release"
    printf 'served by registry %s\n' "$marker" >"$build/marker/marker.txt"

    read -r base_digest base_size base_diff < <(make_layer "$build/base" "$build/base.tar.gz")
    add_blob "$layout" "$build/base.tar.gz" >/dev/null
    read -r marker_digest marker_size marker_diff < <(make_layer "$build/marker" "$build/marker.tar.gz")
    add_blob "$layout" "$build/marker.tar.gz" >/dev/null

    config=$build/config.json
    jq -cn --arg base "$base_diff" --arg marker "$marker_diff" '{
        architecture: "amd64",
        os: "linux",
        config: {Cmd: ["/hello.txt"]},
        rootfs: {type: "layers", diff_ids: [$base, $marker]}
    }' >"$config"
    local config_size
    config_size=$(size_of "$config")
    config_digest=$(add_blob "$layout" "$config")

    manifest=$build/manifest.json
    jq -cn --arg cd "$config_digest" --argjson cs "$config_size" \
        --arg bd "$base_digest" --argjson bs "$base_size" \
        --arg md "$marker_digest" --argjson ms "$marker_size" '{
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
        layers: [
            {mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $bd, size: $bs},
            {mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $md, size: $ms}
        ]
    }' >"$manifest"
    local manifest_size
    manifest_size=$(size_of "$manifest")
    manifest_digest=$(add_blob "$layout" "$manifest")

    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    jq -cn --arg d "$manifest_digest" --argjson s "$manifest_size" --arg tag "$TAG" '{
        schemaVersion: 2,
        manifests: [{
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            digest: $d,
            size: $s,
            annotations: {"org.opencontainers.image.ref.name": $tag}
        }]
    }' >"$layout/index.json"

    echo "$manifest_digest $base_digest $marker_digest"
}

read -r DIGEST_A BASE_LAYER MARKER_LAYER_A < <(build_image "$workdir/image-a" a) ||
    die "could not build image a"
read -r DIGEST_B _ MARKER_LAYER_B < <(build_image "$workdir/image-b" b) ||
    die "could not build image b"
[[ -n "$DIGEST_A" && -n "$DIGEST_B" ]] || die "image build printed no manifest digest"
say "image a: $DIGEST_A, image b: $DIGEST_B, shared layer $BASE_LAYER"

# --- registries ------------------------------------------------------------

# skopeo reads this policy instead of /etc/containers/policy.json, so the
# test does not depend on the machine's signature policy.
readonly SKOPEO_POLICY=$workdir/policy.json
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$SKOPEO_POLICY"

# wait_for_http NAME PID URL: waits until URL returns 200, failing early if
# PID exits.
wait_for_http() {
    local name=$1 pid=$2 url=$3
    local deadline=$((SECONDS + STARTUP_TIMEOUT_SECS))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$name exited before accepting connections on $url"
        fi
        if [[ "$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)" == 200 ]]; then
            return 0
        fi
        sleep 0.2
    done
    die "$name timed out: $url did not return 200 within ${STARTUP_TIMEOUT_SECS}s"
}

# start_registry NAME ADDRESS: starts a registry and waits until it serves.
start_registry() {
    local name=$1 address=$2
    local config=$workdir/registry-$name.yml
    # log.formatter json: the checks below read the "response completed"
    # lines with jq. The combined access log goes to stdout.
    cat >"$config" <<EOF
version: 0.1
log:
  level: info
  formatter: json
storage:
  filesystem:
    rootdirectory: $workdir/storage-$name
  delete:
    enabled: true
http:
  addr: $address
  secret: registry-redirect-e2e
EOF
    docker-registry serve "$config" \
        >"$workdir/logs/registry-$name.access.log" \
        2>"$workdir/logs/registry-$name.log" &
    pids+=("$!")
    wait_for_http "registry $name" "$!" "http://$address/v2/"
}

say "starting registries on $REGISTRY_A and $REGISTRY_B"
start_registry a "$REGISTRY_A"
start_registry b "$REGISTRY_B"

# push_image NAME LAYOUT ADDRESS
push_image() {
    local name=$1 layout=$2 address=$3
    timeout "$SKOPEO_TIMEOUT_SECS" skopeo --policy "$SKOPEO_POLICY" copy --quiet \
        --preserve-digests --dest-tls-verify=false --dest-no-creds \
        "oci:$layout:$TAG" "docker://$address/$REPOSITORY:$TAG" \
        >"$workdir/logs/push-$name.log" 2>&1 ||
        die "skopeo could not push image $name to $address (see push-$name.log below)"
}

say "pushing image a to registry a and image b to registry b"
push_image a "$workdir/image-a" "$REGISTRY_A"
push_image b "$workdir/image-b" "$REGISTRY_B"

# stored_digest ADDRESS: the digest of the manifest the registry returns.
stored_digest() {
    local raw=$workdir/stored-manifest.json
    timeout "$SKOPEO_TIMEOUT_SECS" skopeo --policy "$SKOPEO_POLICY" inspect --raw \
        --tls-verify=false --no-creds "docker://$1/$REPOSITORY:$TAG" >"$raw" 2>&1 ||
        { cat "$raw"; return 0; }
    echo "sha256:$(sha256_of "$raw")"
}

check_eq "registry a stores image a" "$DIGEST_A" "$(stored_digest "$REGISTRY_A")"
check_eq "registry b stores image b" "$DIGEST_B" "$(stored_digest "$REGISTRY_B")"

# --- redirector ------------------------------------------------------------

readonly REDIRECTOR_CONFIG=$workdir/registry-redirect.toml
readonly REDIRECTOR_LOG=$workdir/logs/registry-redirect.log
# Upstream and rule names are distinct words, so the log checks can match
# them exactly.
cat >"$REDIRECTOR_CONFIG" <<EOF
listen = "$REDIRECTOR"
default_upstream = "registry-a"

[upstreams.registry-a]
url = "http://$REGISTRY_A"

[upstreams.registry-b]
url = "http://$REGISTRY_B"

[[rules]]
name = "net-b"
clients = ["$NET_B.0/24"]
upstream = "registry-b"
EOF

say "starting registry-redirect on $REDIRECTOR"
# --log-client-addresses adds client=IP to each access-log line, which the
# log checks below match on.
"$redirector_bin" serve --config "$REDIRECTOR_CONFIG" --listen "$REDIRECTOR" \
    --log-client-addresses >"$workdir/logs/registry-redirect.stdout" 2>"$REDIRECTOR_LOG" &
redirector_pid=$!
pids+=("$redirector_pid")
wait_for_http registry-redirect "$redirector_pid" "http://$REDIRECTOR/v2/"
pass "registry-redirect answers GET /v2/ with 200"

# --- pulls through the redirector ------------------------------------------

# wait_for_quiet_log FILE: waits (at most 3 s) until FILE stops growing, so
# a log line written just after a response lands before the file is read.
wait_for_quiet_log() {
    local file=$1 size previous=-1 rounds=0
    size=$(size_of "$file")
    while [[ "$size" != "$previous" ]] && ((rounds < 15)); do
        sleep 0.2
        previous=$size
        size=$(size_of "$file")
        rounds=$((rounds + 1))
    done
}

# pull_through_redirector CLIENT NAMESPACE: copies the tag through the redirector into a dir:
# layout, as a client in NAMESPACE.
pull_through_redirector() {
    local client=$1 ns=$2
    local out=$workdir/pulled-$client
    rm -rf "$out"
    if ip netns exec "$ns" timeout "$SKOPEO_TIMEOUT_SECS" \
        skopeo --policy "$SKOPEO_POLICY" copy --quiet \
        --src-tls-verify=false --src-no-creds \
        "docker://$REDIRECTOR/$REPOSITORY:$TAG" "dir:$out" \
        >"$workdir/logs/pull-$client.log" 2>&1; then
        pass "client $client pulls through registry-redirect"
    else
        fail "client $client pulls through registry-redirect" \
            "skopeo failed: $(tail -n 5 "$workdir/logs/pull-$client.log" | tr '\n' ' ')"
    fi
}

# pulled_digest CLIENT: the digest of the manifest the client received.
pulled_digest() {
    local manifest=$workdir/pulled-$1/manifest.json
    if [[ -f "$manifest" ]]; then
        echo "sha256:$(sha256_of "$manifest")"
    else
        echo "no manifest"
    fi
}

# pulled_marker CLIENT LAYER_DIGEST: the marker file from the pulled layer.
pulled_marker() {
    local layer=$workdir/pulled-$1/${2#sha256:}
    if [[ -f "$layer" ]]; then
        tar -xzOf "$layer" ./marker.txt 2>/dev/null || echo "no marker.txt in layer"
    else
        echo "layer $2 not pulled"
    fi
}

# check_redirector_log CLIENT IP RULE UPSTREAM: the redirector's access log
# shows manifest and blob redirects for IP, each naming RULE and UPSTREAM.
# This matches the fields outcome, kind, rule, upstream and client of the
# lines with target registry_redirect::access, as in
#   ... registry_redirect::access: method=GET path="/v2/..." kind="blob"
#   outcome="redirect" rule="net-b" upstream="registry-b" status=307
#   micros=29 client=10.200.2.2 client_source="peer"
check_redirector_log() {
    local client=$1 ip=$2 rule=$3 upstream=$4
    local redirects kind count wrong
    redirects=$(grep -F 'registry_redirect::access:' "$REDIRECTOR_LOG" |
        grep -F " client=$ip " | grep -F 'outcome="redirect"' || true)

    for kind in manifest blob; do
        count=$(grep -cF "kind=\"$kind\"" <<<"$redirects" || true)
        if ((count > 0)); then
            pass "registry-redirect logs $kind redirects for client $client ($count)"
        else
            fail "registry-redirect logs $kind redirects for client $client" \
                "no access-log line with kind=\"$kind\" outcome=\"redirect\" client=$ip"
        fi
    done

    wrong=$(grep -vF "rule=\"$rule\" upstream=\"$upstream\"" <<<"$redirects" | grep -c . || true)
    if ((wrong == 0)); then
        pass "registry-redirect logs rule \"$rule\" and upstream $upstream for client $client"
    else
        fail "registry-redirect logs rule \"$rule\" and upstream $upstream for client $client" \
            "$wrong redirect lines name another rule or upstream, such as: $(grep -vF "upstream=\"$upstream\"" <<<"$redirects" | head -n 1)"
    fi
}

say "pulling as client a ($CLIENT_A_IP) and client b ($CLIENT_B_IP)"
pull_through_redirector a "$NS_A"
pull_through_redirector b "$NS_B"
wait_for_quiet_log "$REDIRECTOR_LOG"

check_eq "client a receives the manifest of registry a" "$DIGEST_A" "$(pulled_digest a)"
check_eq "client b receives the manifest of registry b" "$DIGEST_B" "$(pulled_digest b)"
check_eq "client a receives the layer of registry a" "served by registry a" "$(pulled_marker a "$MARKER_LAYER_A")"
check_eq "client b receives the layer of registry b" "served by registry b" "$(pulled_marker b "$MARKER_LAYER_B")"

# No rule matches client a, so its requests go to the default upstream.
check_redirector_log a "$CLIENT_A_IP" "" registry-a
check_redirector_log b "$CLIENT_B_IP" net-b registry-b

# --- registry access logs --------------------------------------------------

# registry_requests REGISTRY METHOD KIND CLIENT_IP: how many METHOD requests
# for /v2/$REPOSITORY/KIND/... from CLIENT_IP the registry's log shows. This
# reads distribution's JSON "response completed" lines and their fields
# http.request.method, http.request.uri and http.request.remoteaddr.
registry_requests() {
    local registry=$1 method=$2 kind=$3 ip=$4
    jq -R --arg method "$method" --arg prefix "/v2/$REPOSITORY/$kind/" --arg ip "$ip" '
        fromjson? // empty
        | select((.msg // "") | startswith("response completed"))
        | select(.["http.request.method"] == $method)
        | select((.["http.request.uri"] // "") | startswith($prefix))
        | select((.["http.request.remoteaddr"] // "") | sub(":[0-9]+$"; "") == $ip)
        | 1' "$workdir/logs/registry-$registry.log" | wc -l
}

# check_registry_saw REGISTRY KIND CLIENT_IP: at least one GET.
check_registry_saw() {
    local count
    count=$(registry_requests "$1" GET "$2" "$3")
    if ((count > 0)); then
        pass "registry $1 serves $2 GETs from $3 ($count)"
    else
        fail "registry $1 serves $2 GETs from $3" "its log shows no GET /v2/$REPOSITORY/$2/... from $3"
    fi
}

# check_registry_never_saw REGISTRY KIND CLIENT_IP: no request at all.
check_registry_never_saw() {
    local count=0 method
    for method in GET HEAD; do
        count=$((count + $(registry_requests "$1" "$method" "$2" "$3")))
    done
    check_eq "registry $1 gets no $2 requests from $3" 0 "$count"
}

check_registry_saw a manifests "$CLIENT_A_IP"
check_registry_saw a blobs "$CLIENT_A_IP"
check_registry_never_saw a manifests "$CLIENT_B_IP"
check_registry_never_saw a blobs "$CLIENT_B_IP"
check_registry_saw b manifests "$CLIENT_B_IP"
check_registry_saw b blobs "$CLIENT_B_IP"
check_registry_never_saw b manifests "$CLIENT_A_IP"
check_registry_never_saw b blobs "$CLIENT_A_IP"

# --- raw responses with curl -----------------------------------------------

# raw_head NAMESPACE PATH: sends a HEAD request for PATH over a plain TCP
# connection (curl never reads a body on HEAD) and prints the whole response
# as the server wrote it until it closed the connection.
raw_head() {
    local ns=$1 path=$2
    local runner=()
    [[ "$ns" != host ]] && runner=(ip netns exec "$ns")
    # shellcheck disable=SC2016 # expanded by the inner bash
    "${runner[@]}" timeout "$CURL_TIMEOUT_SECS" bash -c '
        exec 3<>"/dev/tcp/$1/$2"
        printf "HEAD %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$3" "$1" "$2" >&3
        cat <&3' raw-head "$SERVICE_IP" "$REDIRECTOR_PORT" "$path" || true
}

# check_head_redirect CHECK NAMESPACE PATH EXPECTED_LOCATION: HEAD on PATH
# through the redirector returns 307, Location EXPECTED_LOCATION and no body.
# NAMESPACE "host" runs curl on the host, whose address is the default case.
check_head_redirect() {
    local check=$1 ns=$2 path=$3 expected=$4
    local headers=$workdir/head-headers
    local runner=()
    [[ "$ns" != host ]] && runner=(ip netns exec "$ns")
    rm -f "$headers"

    local status
    status=$("${runner[@]}" curl -s --max-time "$CURL_TIMEOUT_SECS" --head \
        -D "$headers" -o /dev/null -w '%{http_code}' "http://$REDIRECTOR$path" || true)
    check_eq "$check: status" 307 "$status"

    local location length
    location=$(grep -i '^location:' "$headers" 2>/dev/null | head -n 1 | cut -d' ' -f2- | tr -d '\r' || true)
    check_eq "$check: Location" "$expected" "$location"
    length=$(grep -i '^content-length:' "$headers" 2>/dev/null | head -n 1 | cut -d' ' -f2- | tr -d '\r' || true)
    check_eq "$check: Content-Length 0 or absent" 0 "${length:-0}"

    # Everything after the blank line that ends the headers is body.
    local response body_bytes
    response=$workdir/head-raw
    raw_head "$ns" "$path" >"$response"
    if grep -q $'^\r$' "$response"; then
        body_bytes=$(sed '1,/^\r$/d' "$response" | wc -c)
        check_eq "$check: no body bytes on the wire" 0 "$body_bytes"
    else
        fail "$check: no body bytes on the wire" "the raw HEAD response has no end of headers: $(head -c 300 "$response")"
    fi
}

readonly MANIFEST_PATH=/v2/$REPOSITORY/manifests/$TAG
readonly BLOB_PATH=/v2/$REPOSITORY/blobs/$BASE_LAYER

check_head_redirect "HEAD manifest from host" host "$MANIFEST_PATH" "http://$REGISTRY_A$MANIFEST_PATH"
check_head_redirect "HEAD blob from host" host "$BLOB_PATH" "http://$REGISTRY_A$BLOB_PATH"
check_head_redirect "HEAD manifest from client b" "$NS_B" "$MANIFEST_PATH" "http://$REGISTRY_B$MANIFEST_PATH"
check_head_redirect "HEAD blob from client b" "$NS_B" "$BLOB_PATH" "http://$REGISTRY_B$BLOB_PATH"

upload_status=$(curl -s -o /dev/null --max-time "$CURL_TIMEOUT_SECS" -w '%{http_code}' \
    -X POST "http://$REDIRECTOR/v2/$REPOSITORY/blobs/uploads/" || true)
check_eq "POST blob upload is rejected with 405" 405 "$upload_status"

if kill -0 "$redirector_pid" 2>/dev/null; then
    pass "registry-redirect still runs after all requests"
else
    fail "registry-redirect still runs after all requests" "the process exited"
fi

# --- summary ---------------------------------------------------------------

say "summary: clients in $NET_B.0/24 pulled from registry b, other clients from registry a"
if ((failed > 0)); then
    show_logs
fi
printf '%s passed, %s failed\n' "$passed" "$failed"
((failed == 0))
