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
# and an upload (POST) is rejected with 405. Last, a second redirector
# serves the same policy over HTTPS with a certificate from a test CA.
# skopeo pulls through it trusting only that CA and follows the redirect to
# the plain-HTTP registry. curl gets the redirect over HTTP/1.1 and over
# HTTP/2 (ALPN h2).
#
# Usage: pull.sh PATH_TO_REGISTRY_REDIRECT
#        (or set REGISTRY_REDIRECT_BIN instead of passing the path)
# Needs: root (network namespaces), ip, docker-registry, skopeo, curl, jq,
#        openssl, tar, gzip, sha256sum, timeout, flock.
# Set REGISTRY_REDIRECT_E2E_KEEP=1 to keep the temp dir with all logs.
#
# The last line is "N passed, M failed"; the exit status is 0 only when
# every check passed. On exit (success, failure or SIGINT/SIGTERM) the trap
# that lib.sh installs stops every process, namespace, link and temp dir the
# script made.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly TAG=1.0
readonly REPOSITORY=e2e/hello
readonly REDIRECTOR_PORT=15000
readonly REGISTRY_A_PORT=15001
readonly REGISTRY_B_PORT=15002
readonly REDIRECTOR_TLS_PORT=15003

require_redirector_bin "${1:-}"
check_prerequisites
create_workdir

# --- addresses --------------------------------------------------------------

# The slot layout is described at pick_subnet_slot in lib.sh.
lock_networks
octet=$(pick_subnet_slot) || die "no free /24 left in 10.200.0.0/16 for the test networks"
readonly SERVICE_IP=10.200.$octet.1
readonly NET_A=10.200.$((octet + 1))
readonly NET_B=10.200.$((octet + 2))
readonly CLIENT_A_IP=$NET_A.2
readonly CLIENT_B_IP=$NET_B.2
readonly REGISTRY_A=$SERVICE_IP:$REGISTRY_A_PORT
readonly REGISTRY_B=$SERVICE_IP:$REGISTRY_B_PORT
readonly REDIRECTOR=$SERVICE_IP:$REDIRECTOR_PORT
readonly REDIRECTOR_TLS=$SERVICE_IP:$REDIRECTOR_TLS_PORT

# Interface names are at most 15 bytes, and "rr" + PID (<= 7 digits) + 3 fit.
readonly PREFIX=rr$$
readonly NS_A=${PREFIX}-a
readonly NS_B=${PREFIX}-b
readonly LINK_SERVICE=${PREFIX}s0
readonly LINK_SERVICE_PEER=${PREFIX}s1

# --- network ---------------------------------------------------------------

say "network: services on $SERVICE_IP, client A $CLIENT_A_IP in $NS_A, client B $CLIENT_B_IP in $NS_B"
setup_service_address "$LINK_SERVICE" "$LINK_SERVICE_PEER" "$SERVICE_IP" ||
    die "could not create the service link $LINK_SERVICE"
setup_client_namespace "$NS_A" "$NET_A" "$SERVICE_IP" ||
    die "could not create namespace $NS_A"
setup_client_namespace "$NS_B" "$NET_B" "$SERVICE_IP" ||
    die "could not create namespace $NS_B"
unlock_networks

# --- images ----------------------------------------------------------------

# build_image LAYOUT MARKER: writes an OCI image layout with two layers (one
# shared by both images, one naming MARKER) tagged $TAG, and prints the
# manifest digest, the config digest and the two layer digests.
build_image() {
    local layout=$1 marker=$2
    local build=$workdir/build-$marker

    mkdir -p "$build/base/etc" "$build/marker"
    printf 'hello from the registry-redirect end-to-end test\n' >"$build/base/hello.txt"
    printf 'ID=e2e\n' >"$build/base/etc/os-release"
    printf 'served by registry %s\n' "$marker" >"$build/marker/marker.txt"

    write_image "$layout" "$build/base" "$build/marker"
}

read -r DIGEST_A _ BASE_LAYER MARKER_LAYER_A < <(build_image "$workdir/image-a" a) ||
    die "could not build image a"
read -r DIGEST_B _ _ MARKER_LAYER_B < <(build_image "$workdir/image-b" b) ||
    die "could not build image b"
[[ -n "$DIGEST_A" && -n "$DIGEST_B" ]] || die "image build printed no manifest digest"
say "image a: $DIGEST_A, image b: $DIGEST_B, shared layer $BASE_LAYER"

# --- registries ------------------------------------------------------------

write_skopeo_policy

say "starting registries on $REGISTRY_A and $REGISTRY_B"
start_registry a "$REGISTRY_A"
start_registry b "$REGISTRY_B"

say "pushing image a to registry a and image b to registry b"
push_image a "$workdir/image-a" "$REGISTRY_A"
push_image b "$workdir/image-b" "$REGISTRY_B"

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
start_redirector registry-redirect "$REDIRECTOR_CONFIG" "$REDIRECTOR"
redirector_pid=$started_pid
pass "registry-redirect answers GET /v2/ with 200"

# --- pulls through the redirector ------------------------------------------

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
# through the redirector returns 307, Location EXPECTED_LOCATION, the
# Content-Length of the GET response, and no body.
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
    # RFC 9110 gives HEAD the Content-Length that GET would have.
    local get_length
    get_length=$("${runner[@]}" curl -s --max-time "$CURL_TIMEOUT_SECS" "http://$REDIRECTOR$path" | wc -c || true)
    check_eq "$check: Content-Length is that of GET" "$get_length" "${length:-absent}"

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

# --- HTTPS -----------------------------------------------------------------

# make_certificates DIR: writes a test CA (DIR/certs/ca.crt, the only file
# in DIR/certs, as skopeo's --src-cert-dir wants) and a server certificate
# and key for $SERVICE_IP that it signed (DIR/server.crt, DIR/server.key).
make_certificates() {
    local dir=$1
    mkdir -p "$dir/certs"
    printf 'subjectAltName=IP:%s\n' "$SERVICE_IP" >"$dir/san.ext"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/ca.key" -out "$dir/certs/ca.crt" -days 2 \
        -subj "/CN=registry-redirect e2e CA" 2>>"$workdir/logs/openssl.log" &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$dir/server.key" -out "$dir/server.csr" \
            -subj "/CN=$SERVICE_IP" 2>>"$workdir/logs/openssl.log" &&
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/certs/ca.crt" \
            -CAkey "$dir/ca.key" -CAcreateserial -days 2 -extfile "$dir/san.ext" \
            -out "$dir/server.crt" 2>>"$workdir/logs/openssl.log"
}

readonly TLS_DIR=$workdir/tls
make_certificates "$TLS_DIR" ||
    die "openssl could not make the test certificates: $(tail -n 3 "$workdir/logs/openssl.log")"

readonly REDIRECTOR_TLS_CONFIG=$workdir/registry-redirect-tls.toml
cp "$REDIRECTOR_CONFIG" "$REDIRECTOR_TLS_CONFIG"
printf '\n[tls]\ncert_file = "tls/server.crt"\nkey_file = "tls/server.key"\n' \
    >>"$REDIRECTOR_TLS_CONFIG"

say "starting registry-redirect with TLS on $REDIRECTOR_TLS"
"$redirector_bin" serve --config "$REDIRECTOR_TLS_CONFIG" --listen "$REDIRECTOR_TLS" \
    >"$workdir/logs/registry-redirect-tls.stdout" 2>"$workdir/logs/registry-redirect-tls.log" &
pids+=("$!")
CURL_CA_BUNDLE=$TLS_DIR/certs/ca.crt \
    wait_for_http registry-redirect-tls "$!" "https://$REDIRECTOR_TLS/v2/"
pass "registry-redirect answers GET /v2/ over HTTPS with 200"

pull_through_redirector b-tls "$NS_B" "$REDIRECTOR_TLS" "$TLS_DIR/certs"
check_eq "client b receives the manifest of registry b over HTTPS" "$DIGEST_B" "$(pulled_digest b-tls)"

# check_https_redirect VERSION_FLAG EXPECTED_VERSION: curl in client b's
# namespace, trusting only the test CA, gets the manifest redirect to
# registry b over the HTTP version that VERSION_FLAG selects. curl's
# %{http_version} writes HTTP/1.0 as 1.
check_https_redirect() {
    local flag=$1 expected_version=$2 written
    written=$(ip netns exec "$NS_B" curl -s --max-time "$CURL_TIMEOUT_SECS" "$flag" \
        --cacert "$TLS_DIR/certs/ca.crt" -o /dev/null \
        -w '%{http_code} %{http_version} %{redirect_url}' \
        "https://$REDIRECTOR_TLS$MANIFEST_PATH" || true)
    check_eq "HTTPS $flag: status, version and Location" \
        "307 $expected_version http://$REGISTRY_B$MANIFEST_PATH" "$written"
}

check_https_redirect --http1.0 1
check_https_redirect --http1.1 1.1
check_https_redirect --http2 2

# --- summary ---------------------------------------------------------------

say "summary: clients in $NET_B.0/24 pulled from registry b, other clients from registry a"
summarize
