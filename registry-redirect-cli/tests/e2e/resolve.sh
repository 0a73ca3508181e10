#!/usr/bin/env bash
# End-to-end test: resolve mode (auth = "resolve") against a real
# token-auth registry whose blobs are served from separate storage.
#
# The upstream is built the way Docker Hub looks from outside:
#  - a token issuer (token_issuer.py) that signs RS256 JWTs with an x5c
#    certificate, gives anonymous clients pull on public repositories and
#    its one user pull and push on everything;
#  - Debian's docker-registry (distribution 2.8) with token auth trusting
#    that certificate;
#  - an nginx "front" that proxies /v2/ to the registry, but responds to a
#    blob GET or HEAD only after the registry has accepted the client's
#    token for it (auth_request), and then with a 307 to "storage";
#  - "storage", a second nginx server that serves the registry's blob files
#    under a random path per run and needs no token, like a pre-signed URL.
# Each has its own log. The services have distinct addresses on the host,
# and the clients run in network namespaces, so every log shows who
# fetched what.
#
# Checks:
#  1. The harness: skopeo copies the image straight from the front, a blob
#     request without a token gets 401, a missing blob gets 404, and
#     anonymous clients cannot read the private repository.
#  2. Through a plain redirect (auth = "none", api_version_check =
#     "redirect") skopeo fails with 401: the client gets a token from the
#     challenge, but drops it on the redirect to the front's host. This is
#     why resolve mode exists.
#  3. Through resolve mode skopeo copies the public image anonymously, and
#     the private one with the credentials from a password_file, and gets
#     the pushed manifest digests. HEAD on the manifest returns its digest
#     and media type, the tag list is served, and a blob GET gets a 307 to
#     the storage URL. A missing blob gets the upstream's 404, and a
#     private repository routed to the anonymous upstream the upstream's
#     401, each with its error code.
#  4. Blob bytes bypass the redirector. Storage logs a GET of every blob
#     with its full size from the client's address, and no request from a
#     service address. Neither the front nor the registry sends a blob body
#     to anyone. Every `bytes` field in the redirector's access log is at
#     most MAX_DOCUMENT_BYTES, less than the size of the large layer. The
#     client never talks to the token issuer or the front.
#  5. containerd's path: containerd (`ctr content fetch`, the resolver that
#     containerd's image pulls use) fetches the image through the plain
#     redirect, because it authenticates again at the host it was
#     redirected to. It does so with api_version_check = "answer" too,
#     because its resolver never sends GET /v2/.
#  6. Against the registry itself, which sends blob bodies with 200,
#     resolve mode returns 502 UNSUPPORTED for a blob, unless the upstream
#     has blob_proxy = true. Then the blob is streamed through, and the
#     access log marks it streamed, with its full size.
#
# Usage: resolve.sh PATH_TO_REGISTRY_REDIRECT
#        (or set REGISTRY_REDIRECT_BIN instead of passing the path)
# Needs: root (network namespaces), ip, docker-registry, skopeo, curl, jq,
#        nginx, openssl, python3, containerd, ctr, tar, gzip, sha256sum,
#        timeout, flock.
# Set REGISTRY_REDIRECT_E2E_KEEP=1 to keep the temp dir with all logs.
#
# The last line is "N passed, M failed"; the exit status is 0 only when
# every check passed. On exit (success, failure or SIGINT/SIGTERM) the trap
# that lib.sh installs stops every process, namespace, link and temp dir the
# script made.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR

readonly TAG=1.0
readonly REPOSITORY=e2e/hello
# The name of REPOSITORY for clients of an upstream whose path_prefix is
# REPOSITORY's first component.
readonly PREFIXED_NAME=${REPOSITORY#*/}
# The issuer lets only its user read this repository and everything below.
readonly PRIVATE_REPOSITORY=e2e/private
# Private too, but the redirector sends it to the anonymous upstream.
readonly LOCKED_REPOSITORY=e2e/private/locked

readonly RESOLVE_PORT=15200
readonly PLAIN_PORT=15201
readonly REGISTRY_PORT=15202
readonly FRONT_PORT=15203
readonly STORAGE_PORT=15204
readonly ISSUER_PORT=15205
readonly PLAIN_ANSWER_PORT=15206
readonly RESOLVE_DIRECT_PORT=15207

readonly SERVICE_NAME=registry-redirect-e2e
readonly ISSUER_NAME=registry-redirect-e2e-issuer
readonly USERNAME=e2e-user

# Manifests and configs of the test image are a few hundred bytes, and the
# large layer is LARGE_LAYER_BYTES of random data, which gzip cannot
# shrink. A redirector body of at most MAX_DOCUMENT_BYTES is therefore a
# document, never that layer.
readonly LARGE_LAYER_BYTES=$((256 * 1024))
readonly MAX_DOCUMENT_BYTES=$((16 * 1024))

require_redirector_bin "${1:-}"
check_prerequisites

missing_tools=()
for tool in nginx:nginx openssl:openssl python3:python3 containerd:containerd ctr:containerd; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing_tools+=("${tool%%:*} (Debian package ${tool#*:})")
done
((${#missing_tools[@]} == 0)) ||
    die "missing tools: ${missing_tools[*]}; install them with apt-get install -y --no-install-recommends <package>"

create_workdir

# --- addresses --------------------------------------------------------------

# The slot layout is described at pick_subnet_slot in lib.sh. This script
# also uses the slot's fourth /24 (10.200.S+3.0/24), which no other run
# picks, and puts each service on its own address in 10.200.S.0/24, so
# that the front, storage and the issuer are different hosts to the
# clients: Go's HTTP client drops Authorization on a redirect to another
# host, and containerd keeps its tokens per host.
lock_networks
octet=$(pick_subnet_slot) || die "no free /24 left in 10.200.0.0/16 for the test networks"
readonly SERVICE_IP=10.200.$octet.1
readonly FRONT_IP=10.200.$octet.2
readonly STORAGE_IP=10.200.$octet.3
readonly ISSUER_IP=10.200.$octet.4
readonly NET_A=10.200.$((octet + 1))
readonly NET_B=10.200.$((octet + 2))
readonly NET_C=10.200.$((octet + 3))
readonly CLIENT_A_IP=$NET_A.2
readonly CLIENT_B_IP=$NET_B.2
readonly CLIENT_C_IP=$NET_C.2

readonly RESOLVE_REDIRECTOR=$SERVICE_IP:$RESOLVE_PORT
readonly PLAIN_REDIRECTOR=$SERVICE_IP:$PLAIN_PORT
readonly PLAIN_ANSWER_REDIRECTOR=$SERVICE_IP:$PLAIN_ANSWER_PORT
readonly RESOLVE_DIRECT_REDIRECTOR=$SERVICE_IP:$RESOLVE_DIRECT_PORT
readonly REGISTRY=$SERVICE_IP:$REGISTRY_PORT
readonly FRONT=$FRONT_IP:$FRONT_PORT
readonly STORAGE=$STORAGE_IP:$STORAGE_PORT
readonly ISSUER=$ISSUER_IP:$ISSUER_PORT

# Interface names are at most 15 bytes, and "rr" + PID (<= 7 digits) + 3 fit.
readonly PREFIX=rr$$
# Client A pulls through resolve mode only, so the issuer's log shows
# whether resolve mode let it meet a challenge. Client B runs the harness
# and plain-redirect checks, client C containerd.
readonly NS_A=${PREFIX}-a
readonly NS_B=${PREFIX}-b
readonly NS_C=${PREFIX}-c
readonly LINK_SERVICE=${PREFIX}s0
readonly LINK_SERVICE_PEER=${PREFIX}s1
readonly SERVICE_IPS=("$SERVICE_IP" "$FRONT_IP" "$STORAGE_IP" "$ISSUER_IP")

# --- network ---------------------------------------------------------------

say "network: redirectors and registry on $SERVICE_IP, front $FRONT_IP, storage $STORAGE_IP, issuer $ISSUER_IP"
say "clients: A $CLIENT_A_IP in $NS_A, B $CLIENT_B_IP in $NS_B, C $CLIENT_C_IP in $NS_C"
setup_service_address "$LINK_SERVICE" "$LINK_SERVICE_PEER" "$SERVICE_IP" ||
    die "could not create the service link $LINK_SERVICE"
for address in "$FRONT_IP" "$STORAGE_IP" "$ISSUER_IP"; do
    add_service_address "$LINK_SERVICE" "$address" ||
        die "could not add $address to $LINK_SERVICE"
done
setup_client_namespace "$NS_A" "$NET_A" "${SERVICE_IPS[@]}" ||
    die "could not create namespace $NS_A"
setup_client_namespace "$NS_B" "$NET_B" "${SERVICE_IPS[@]}" ||
    die "could not create namespace $NS_B"
setup_client_namespace "$NS_C" "$NET_C" "${SERVICE_IPS[@]}" ||
    die "could not create namespace $NS_C"
unlock_networks

# --- image -----------------------------------------------------------------

build=$workdir/build
mkdir -p "$build/base/etc" "$build/large"
printf 'hello from the registry-redirect resolve test\n' >"$build/base/hello.txt"
printf 'ID=e2e\n' >"$build/base/etc/os-release"
head -c "$LARGE_LAYER_BYTES" /dev/urandom >"$build/large/random.bin"

read -r IMAGE_DIGEST CONFIG_BLOB BASE_LAYER LARGE_LAYER < <(
    write_image "$workdir/image" "$build/base" "$build/large"
) || die "could not build the image"
[[ -n "$LARGE_LAYER" ]] || die "the image build printed no digests"
readonly ALL_BLOBS=("$CONFIG_BLOB" "$BASE_LAYER" "$LARGE_LAYER")
say "image $IMAGE_DIGEST; large layer $LARGE_LAYER"

# blob_size DIGEST: the size of a blob of the built image, in bytes.
blob_size() {
    size_of "$workdir/image/blobs/sha256/${1#sha256:}"
}

LARGE_LAYER_SIZE=$(blob_size "$LARGE_LAYER")
readonly LARGE_LAYER_SIZE
((LARGE_LAYER_SIZE > MAX_DOCUMENT_BYTES)) ||
    die "the large layer has $LARGE_LAYER_SIZE bytes, not more than MAX_DOCUMENT_BYTES ($MAX_DOCUMENT_BYTES)"

# --- token issuer ----------------------------------------------------------

readonly TOKEN_DIR=$workdir/token
readonly PASSWORD_FILE=$TOKEN_DIR/password
readonly ISSUER_LOG=$workdir/logs/issuer.requests.log
mkdir -p "$TOKEN_DIR"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 \
    -subj "/CN=$ISSUER_NAME" \
    -keyout "$TOKEN_DIR/key.pem" -out "$TOKEN_DIR/certificate.pem" \
    >"$workdir/logs/openssl.log" 2>&1 ||
    die "openssl could not make the issuer's key and certificate (see openssl.log)"
openssl rand -hex 16 >"$PASSWORD_FILE"
chmod 600 "$PASSWORD_FILE"
PASSWORD=$(cat "$PASSWORD_FILE")
readonly PASSWORD

say "starting the token issuer on $ISSUER"
python3 "$SCRIPT_DIR/token_issuer.py" --listen "$ISSUER" \
    --key "$TOKEN_DIR/key.pem" --certificate "$TOKEN_DIR/certificate.pem" \
    --issuer "$ISSUER_NAME" --service "$SERVICE_NAME" \
    --username "$USERNAME" --password-file "$PASSWORD_FILE" \
    --private-prefix "$PRIVATE_REPOSITORY" --log "$ISSUER_LOG" \
    >"$workdir/logs/issuer.log" 2>&1 &
pids+=("$!")
wait_for_http "token issuer" "$!" "http://$ISSUER/token?service=$SERVICE_NAME"

# --- registry --------------------------------------------------------------

readonly STORAGE_ROOT=$workdir/storage-upstream
readonly REGISTRY_LOG=$workdir/logs/registry-upstream.log

say "starting docker-registry with token auth on $REGISTRY"
start_registry upstream "$REGISTRY" "auth:
  token:
    realm: http://$ISSUER/token
    service: $SERVICE_NAME
    issuer: $ISSUER_NAME
    rootcertbundle: $TOKEN_DIR/certificate.pem"

write_skopeo_policy

# push_to_registry REPOSITORY: pushes the image to the registry itself with
# the user's credentials, which the issuer grants push.
push_to_registry() {
    local repository=$1
    timeout "$SKOPEO_TIMEOUT_SECS" skopeo --policy "$SKOPEO_POLICY" copy --quiet \
        --preserve-digests --dest-tls-verify=false \
        --dest-creds "$USERNAME:$PASSWORD" \
        "oci:$workdir/image:$TAG" "docker://$REGISTRY/$repository:$TAG" \
        >"$workdir/logs/push-${repository//\//-}.log" 2>&1 ||
        die "skopeo could not push to $REGISTRY/$repository (see push-${repository//\//-}.log)"
}

say "pushing the image to $REPOSITORY and $PRIVATE_REPOSITORY"
push_to_registry "$REPOSITORY"
push_to_registry "$PRIVATE_REPOSITORY"

# --- front and storage (nginx) ---------------------------------------------

# The random path is the storage URL's only secret, as in a pre-signed URL.
STORAGE_SECRET=$(openssl rand -hex 16)
readonly STORAGE_SECRET
readonly NGINX_DIR=$workdir/nginx
readonly FRONT_LOG=$workdir/logs/front.access.log
readonly STORAGE_LOG=$workdir/logs/storage.access.log
mkdir -p "$NGINX_DIR/temp"

# nginx runs the access phase (auth_request) after the rewrite phase, where
# `return` would send the 307 before any token check. So the front makes
# the 307 in the content phase instead: it proxies the checked request to
# the "signer" server on a unix socket, which returns the storage URL.
cat >"$NGINX_DIR/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
# The workers read the blob files in the temp dir, which only root may.
user root;
pid $NGINX_DIR/nginx.pid;
error_log $workdir/logs/nginx.error.log notice;

events {
    worker_connections 256;
}

http {
    client_body_temp_path $NGINX_DIR/temp/client_body;
    proxy_temp_path $NGINX_DIR/temp/proxy;
    fastcgi_temp_path $NGINX_DIR/temp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/temp/uwsgi;
    scgi_temp_path $NGINX_DIR/temp/scgi;

    # The kind of credentials a request carried, never the credentials.
    map \$http_authorization \$authorization_scheme {
        default other;
        "" none;
        "~*^bearer " bearer;
        "~*^basic " basic;
    }

    log_format e2e escape=json '{"client":"\$remote_addr","method":"\$request_method",'
        '"uri":"\$request_uri","status":\$status,"bytes":\$body_bytes_sent,'
        '"authorization":"\$authorization_scheme","location":"\$sent_http_location"}';
    access_log off;

    server {
        listen $FRONT;
        access_log $FRONT_LOG e2e;
        client_max_body_size 0;

        location /v2/ {
            proxy_pass http://$REGISTRY;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_http_version 1.1;
            proxy_redirect off;
        }

        location ~ "^/v2/(?<repository>.+)/blobs/sha256:(?<hex_start>[0-9a-f]{2})(?<hex_rest>[0-9a-f]{62})\$" {
            limit_except GET {
                deny all;
            }
            auth_request /_token_check;
            # auth_request turns any other status of the check into 500.
            auth_request_set \$token_check_status \$upstream_status;
            error_page 500 = @token_check_failed;
            proxy_pass http://unix:$NGINX_DIR/signer.sock:/\$hex_start/\$hex_start\$hex_rest;
            proxy_redirect off;
        }

        # A blob the registry does not have gets its 404 and error code, as
        # from a registry. Other failures of the check are a 502.
        location @token_check_failed {
            default_type application/json;
            if (\$token_check_status = 404) {
                return 404 '{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}';
            }
            return 502 '{"errors":[{"code":"UNAVAILABLE","message":"token check failed"}]}';
        }

        # Asks the registry whether the client's token may read this blob:
        # 2xx lets the request through, and a 401 or 403 goes back to the
        # client with the registry's WWW-Authenticate challenge.
        location = /_token_check {
            internal;
            proxy_method HEAD;
            proxy_pass http://$REGISTRY\$request_uri;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Real-IP \$remote_addr;
        }
    }

    server {
        listen unix:$NGINX_DIR/signer.sock;
        access_log off;
        location / {
            return 307 http://$STORAGE/$STORAGE_SECRET\$uri/data;
        }
    }

    server {
        listen $STORAGE;
        access_log $STORAGE_LOG e2e;
        location /$STORAGE_SECRET/ {
            alias $STORAGE_ROOT/docker/registry/v2/blobs/sha256/;
            default_type application/octet-stream;
        }
        location / {
            return 404;
        }
    }
}
EOF

say "starting nginx: front on $FRONT, storage on $STORAGE"
nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$workdir/logs/nginx.error.log" \
    >"$workdir/logs/nginx.stdout" 2>&1 &
pids+=("$!")
wait_for_http "nginx front" "$!" "http://$FRONT/v2/" 401
wait_for_http "nginx storage" "$!" "http://$STORAGE/" 404

# --- helpers ----------------------------------------------------------------

# copy_image NAME NAMESPACE ADDRESS REPOSITORY [SKOPEO_OPTION...]: copies
# the tag from docker://ADDRESS/REPOSITORY into the dir: layout pulled-NAME
# as a client in NAMESPACE, logging to logs/pull-NAME.log. Returns
# skopeo's status. Without options, the client sends no credentials.
copy_image() {
    local name=$1 ns=$2 address=$3 repository=$4
    shift 4
    local options=("$@")
    ((${#options[@]} > 0)) || options=(--src-no-creds)
    rm -rf "$workdir/pulled-$name"
    ip netns exec "$ns" timeout "$SKOPEO_TIMEOUT_SECS" \
        skopeo --policy "$SKOPEO_POLICY" copy --quiet --src-tls-verify=false \
        "${options[@]}" "docker://$address/$repository:$TAG" "dir:$workdir/pulled-$name" \
        >"$workdir/logs/pull-$name.log" 2>&1
}

# expect_copy CHECK NAME NAMESPACE ADDRESS REPOSITORY [SKOPEO_OPTION...]:
# the copy succeeds and yields the pushed manifest.
expect_copy() {
    local check=$1 name=$2
    if copy_image "$name" "${@:3}"; then
        pass "$check"
        check_eq "$check: manifest digest" "$IMAGE_DIGEST" "$(pulled_digest "$name")"
    else
        fail "$check" "skopeo failed: $(tail -n 3 "$workdir/logs/pull-$name.log" | tr '\n' ' ')"
    fi
}

# expect_unauthorized_copy CHECK NAME NAMESPACE ADDRESS REPOSITORY: the copy
# fails, and skopeo's error names the 401 (distribution's error code
# UNAUTHORIZED is printed as "unauthorized").
expect_unauthorized_copy() {
    local check=$1 name=$2
    if copy_image "$name" "${@:3}"; then
        fail "$check" "skopeo copied the image"
    elif grep -qiE 'unauthorized|401' "$workdir/logs/pull-$name.log"; then
        pass "$check"
    else
        fail "$check" "skopeo failed, but not with 401: $(tail -n 3 "$workdir/logs/pull-$name.log" | tr '\n' ' ')"
    fi
}

# http_status NAMESPACE URL [CURL_OPTION...]: the status code of a GET, or
# 000 when there is no response.
http_status() {
    local ns=$1 url=$2
    shift 2
    ip netns exec "$ns" curl -s -o /dev/null --max-time "$CURL_TIMEOUT_SECS" \
        -w '%{http_code}' "$@" "$url" || true
}

# anonymous_token REPOSITORY: a token from the issuer for pulling REPOSITORY.
anonymous_token() {
    curl -s --max-time "$CURL_TIMEOUT_SECS" \
        "http://$ISSUER/token?service=$SERVICE_NAME&scope=repository:$1:pull" | jq -r .token
}

# --- log helpers -------------------------------------------------------------

# line_count FILE: the number of lines FILE has now, to read only later
# lines with lines_after.
line_count() {
    wc -l <"$1"
}

# lines_after FILE COUNT: the lines of FILE after its first COUNT.
lines_after() {
    tail -n "+$(($2 + 1))" "$1"
}

# storage_gets LINES CLIENT_IP DIGEST: "STATUS BYTES" of each storage GET of
# the blob DIGEST from CLIENT_IP in LINES (nginx JSON log lines).
storage_gets() {
    jq -r --arg ip "$2" --arg suffix "/${3#sha256:}/data" '
        select(.client == $ip and .method == "GET" and (.uri | endswith($suffix)))
        | "\(.status) \(.bytes)"' <<<"$1"
}

# check_storage_sent_blobs CLIENT LINES CLIENT_IP: storage sent every blob
# of the image, whole, to CLIENT_IP.
check_storage_sent_blobs() {
    local client=$1 lines=$2 ip=$3 digest expected
    for digest in "${ALL_BLOBS[@]}"; do
        expected=$(blob_size "$digest")
        if grep -qx "200 $expected" < <(storage_gets "$lines" "$ip" "$digest"); then
            pass "storage sends $client blob ${digest:7:12} whole ($expected bytes)"
        else
            fail "storage sends $client blob ${digest:7:12} whole ($expected bytes)" \
                "storage GETs of it from $ip (status bytes): $(storage_gets "$lines" "$ip" "$digest" | tr '\n' ' ')"
        fi
    done
}

# --- 1. harness ------------------------------------------------------------

say "1. harness: the front with the registry's own auth"
expect_copy "skopeo copies $REPOSITORY straight from the front" front "$NS_B" "$FRONT" "$REPOSITORY"
expect_unauthorized_copy "anonymous skopeo cannot copy $PRIVATE_REPOSITORY from the front" \
    front-private-anonymous "$NS_B" "$FRONT" "$PRIVATE_REPOSITORY"
expect_copy "skopeo with credentials copies $PRIVATE_REPOSITORY from the front" \
    front-private "$NS_B" "$FRONT" "$PRIVATE_REPOSITORY" --src-creds "$USERNAME:$PASSWORD"

readonly LARGE_BLOB_PATH=/v2/$REPOSITORY/blobs/$LARGE_LAYER
check_eq "front: blob GET without a token gets 401" 401 \
    "$(http_status "$NS_B" "http://$FRONT$LARGE_BLOB_PATH")"
check_eq "front: blob GET with a token for another repository gets 401" 401 \
    "$(http_status "$NS_B" "http://$FRONT$LARGE_BLOB_PATH" -H "Authorization: Bearer $(anonymous_token e2e/other)")"

# storage_url DIGEST: where the front sends a client for the blob DIGEST.
storage_url() {
    echo "http://$STORAGE/$STORAGE_SECRET/${1:7:2}/${1#sha256:}/data"
}

MISSING_BLOB=sha256:$(printf '%064d' 0)
readonly MISSING_BLOB
check_eq "front: GET of a missing blob with a pull token gets 404" 404 \
    "$(http_status "$NS_B" "http://$FRONT/v2/$REPOSITORY/blobs/$MISSING_BLOB" \
        -H "Authorization: Bearer $(anonymous_token "$REPOSITORY")")"

token=$(anonymous_token "$REPOSITORY")
location=$(ip netns exec "$NS_B" curl -s -o /dev/null --max-time "$CURL_TIMEOUT_SECS" \
    -H "Authorization: Bearer $token" -w '%{http_code} %{redirect_url}' \
    "http://$FRONT$LARGE_BLOB_PATH" || true)
check_eq "front: blob GET with a pull token gets 307 to storage" \
    "307 $(storage_url "$LARGE_LAYER")" "$location"
storage_digest=$(ip netns exec "$NS_B" curl -s --max-time "$CURL_TIMEOUT_SECS" \
    "$(storage_url "$LARGE_LAYER")" | sha256sum | cut -d' ' -f1)
check_eq "storage serves the blob without a token" "$LARGE_LAYER" "sha256:$storage_digest"

# --- 2. plain redirect -----------------------------------------------------

readonly PLAIN_CONFIG=$workdir/plain.toml
readonly PLAIN_LOG=$workdir/logs/redirector-plain.log
cat >"$PLAIN_CONFIG" <<EOF
default_upstream = "front"

# A plain redirect, as for any registry without token auth. /v2/ is
# redirected too, so that clients meet the front's challenge.
[upstreams.front]
url = "http://$FRONT"
api_version_check = "redirect"
EOF

say "starting the plain redirector on $PLAIN_REDIRECTOR"
start_redirector redirector-plain "$PLAIN_CONFIG" "$PLAIN_REDIRECTOR" 307

say "2. skopeo through the plain redirect"
front_mark=$(line_count "$FRONT_LOG")
issuer_mark=$(line_count "$ISSUER_LOG")
expect_unauthorized_copy "skopeo cannot copy through a plain redirect to the front" \
    plain "$NS_B" "$PLAIN_REDIRECTOR" "$REPOSITORY"

# skopeo met the front's challenge through the redirected /v2/ and got a
# token, but Go's HTTP client left the Authorization header out of the
# redirected manifest request.
client_tokens=$(lines_after "$ISSUER_LOG" "$issuer_mark" |
    jq -c --arg ip "$CLIENT_B_IP" 'select(.client == $ip and .status == 200)' | wc -l)
if ((client_tokens > 0)); then
    pass "skopeo gets a token through the plain redirect ($client_tokens)"
else
    fail "skopeo gets a token through the plain redirect" "the issuer logs no token for $CLIENT_B_IP"
fi
check_eq "front gets the redirected manifest request without a token" "401 none" \
    "$(lines_after "$FRONT_LOG" "$front_mark" | jq -r --arg ip "$CLIENT_B_IP" '
        select(.client == $ip and (.uri | test("/manifests/")))
        | "\(.status) \(.authorization)"' | sort -u | tr '\n' ' ' | sed 's/ $//')"

# --- 3. resolve mode ---------------------------------------------------------

readonly RESOLVE_CONFIG=$workdir/resolve.toml
readonly RESOLVE_LOG=$workdir/logs/redirector-resolve.log
cat >"$RESOLVE_CONFIG" <<EOF2
default_upstream = "front"

# The redirector fetches tokens itself: anonymously for "front", with the
# user's credentials for "front-credentials".
[upstreams.front]
url = "http://$FRONT"
auth = "resolve"

[upstreams.front-credentials]
url = "http://$FRONT"
auth = "resolve"

[upstreams.front-credentials.credentials]
username = "$USERNAME"
password_file = "$PASSWORD_FILE"

[[rules]]
name = "locked-anonymous"
repositories = ["$LOCKED_REPOSITORY"]
upstream = "front"

[[rules]]
name = "private"
repositories = ["$PRIVATE_REPOSITORY"]
upstream = "front-credentials"

# "$PREFIXED_NAME" here is "$REPOSITORY" at the upstream.
[upstreams.front-prefixed]
url = "http://$FRONT"
auth = "resolve"
path_prefix = "${REPOSITORY%/*}"

[[rules]]
name = "prefixed"
repositories = ["$PREFIXED_NAME"]
upstream = "front-prefixed"
EOF2

front_mark=$(line_count "$FRONT_LOG")
storage_mark=$(line_count "$STORAGE_LOG")
issuer_mark=$(line_count "$ISSUER_LOG")

say "starting the resolve redirector on $RESOLVE_REDIRECTOR"
start_redirector redirector-resolve "$RESOLVE_CONFIG" "$RESOLVE_REDIRECTOR"
resolve_pid=$started_pid

say "3. skopeo through resolve mode"
expect_copy "skopeo copies $REPOSITORY through resolve mode" \
    resolve "$NS_A" "$RESOLVE_REDIRECTOR" "$REPOSITORY"
expect_copy "skopeo copies $PRIVATE_REPOSITORY through resolve mode with credentials" \
    resolve-private "$NS_A" "$RESOLVE_REDIRECTOR" "$PRIVATE_REPOSITORY"

# The upstream's 401 and its OCI error body reach the client.
readonly LOCKED_BODY=$workdir/locked-manifest.json
locked_status=$(ip netns exec "$NS_A" curl -s -o "$LOCKED_BODY" --max-time "$CURL_TIMEOUT_SECS" \
    -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$RESOLVE_REDIRECTOR/v2/$LOCKED_REPOSITORY/manifests/$TAG" || true)
check_eq "resolve mode passes the upstream's 401 for $LOCKED_REPOSITORY" 401 "$locked_status"
check_eq "resolve mode passes the upstream's error code for $LOCKED_REPOSITORY" UNAUTHORIZED \
    "$(jq -r '.errors[0].code' "$LOCKED_BODY" 2>/dev/null || echo "no JSON body: $(head -c 200 "$LOCKED_BODY")")"

# header_value NAME FILE: the value of the first header NAME in a curl -D
# dump, or "absent".
header_value() {
    local value
    value=$(grep -i "^$1:" "$2" 2>/dev/null | head -n 1 | cut -d' ' -f2- | tr -d '\r' || true)
    echo "${value:-absent}"
}

# The raw responses that a client in namespace A receives.
readonly HEADERS=$workdir/resolve-headers
readonly MANIFEST_URL=http://$RESOLVE_REDIRECTOR/v2/$REPOSITORY/manifests/$TAG
readonly OCI_MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
head_status=$(ip netns exec "$NS_A" curl -s --head -o /dev/null -D "$HEADERS" \
    --max-time "$CURL_TIMEOUT_SECS" -w '%{http_code}' -H "Accept: $OCI_MANIFEST_TYPE" \
    "$MANIFEST_URL" || true)
check_eq "resolve mode: HEAD manifest status" 200 "$head_status"
check_eq "resolve mode: HEAD manifest Docker-Content-Digest" "$IMAGE_DIGEST" \
    "$(header_value Docker-Content-Digest "$HEADERS")"
check_eq "resolve mode: HEAD manifest Content-Type" "$OCI_MANIFEST_TYPE" \
    "$(header_value Content-Type "$HEADERS")"

tag_list=$(ip netns exec "$NS_A" curl -s --max-time "$CURL_TIMEOUT_SECS" \
    "http://$RESOLVE_REDIRECTOR/v2/$REPOSITORY/tags/list" || true)
check_eq "resolve mode: tag list" "[\"$TAG\"]" "$(jq -c '.tags' <<<"$tag_list" 2>/dev/null || true)"
check_eq "resolve mode: tag list name" "$REPOSITORY" "$(jq -r '.name' <<<"$tag_list" 2>/dev/null || true)"

# Under a path prefix, the list names the repository as the client wrote it.
tag_list=$(ip netns exec "$NS_A" curl -s --max-time "$CURL_TIMEOUT_SECS" \
    "http://$RESOLVE_REDIRECTOR/v2/$PREFIXED_NAME/tags/list" || true)
check_eq "resolve mode: tag list under a path prefix" "[\"$TAG\"]" \
    "$(jq -c '.tags' <<<"$tag_list" 2>/dev/null || true)"
check_eq "resolve mode: tag list name under a path prefix" "$PREFIXED_NAME" \
    "$(jq -r '.name' <<<"$tag_list" 2>/dev/null || echo "no JSON body: $tag_list")"

blob_response=$(ip netns exec "$NS_A" curl -s -o /dev/null -D "$HEADERS" \
    --max-time "$CURL_TIMEOUT_SECS" -w '%{http_code}' \
    "http://$RESOLVE_REDIRECTOR/v2/$REPOSITORY/blobs/$LARGE_LAYER" || true)
check_eq "resolve mode: blob GET status" 307 "$blob_response"
check_eq "resolve mode: blob GET Location is the storage URL" "$(storage_url "$LARGE_LAYER")" \
    "$(header_value Location "$HEADERS")"

readonly MISSING_BODY=$workdir/missing-blob.json
missing_status=$(ip netns exec "$NS_A" curl -s -o "$MISSING_BODY" --max-time "$CURL_TIMEOUT_SECS" \
    -w '%{http_code}' "http://$RESOLVE_REDIRECTOR/v2/$REPOSITORY/blobs/$MISSING_BLOB" || true)
check_eq "resolve mode: missing blob gets the upstream's 404" 404 "$missing_status"
check_eq "resolve mode: missing blob gets the upstream's error code" BLOB_UNKNOWN \
    "$(jq -r '.errors[0].code' "$MISSING_BODY" 2>/dev/null || echo "no JSON body: $(head -c 200 "$MISSING_BODY")")"

wait_for_quiet_log "$RESOLVE_LOG"
front_lines=$(lines_after "$FRONT_LOG" "$front_mark")
storage_lines=$(lines_after "$STORAGE_LOG" "$storage_mark")
issuer_lines=$(lines_after "$ISSUER_LOG" "$issuer_mark")

# --- 4. blob bytes bypass the redirector -------------------------------------

say "4. logs: blob bytes went from storage to the client"
check_storage_sent_blobs "client A" "$storage_lines" "$CLIENT_A_IP"

others=$(jq -r --arg ip "$CLIENT_A_IP" 'select(.client != $ip) | .client' <<<"$storage_lines" | sort -u | tr '\n' ' ')
check_eq "storage gets requests only from client A during resolve pulls" "" "$others"

front_from_client=$(jq -c --arg ip "$CLIENT_A_IP" 'select(.client == $ip)' <<<"$front_lines" | wc -l)
check_eq "client A never contacts the front" 0 "$front_from_client"

front_blob_lines=$(jq -c 'select(.uri | test("/blobs/sha256:"))' <<<"$front_lines")
check_eq "front sends no blob body to the redirector" 0 \
    "$(jq -c 'select(.status == 200 or .status == 206)' <<<"$front_blob_lines" | wc -l)"
redirected=$(jq -c 'select(.status == 307)' <<<"$front_blob_lines" | wc -l)
if ((redirected > 0)); then
    pass "front redirects the redirector's blob requests to storage ($redirected)"
else
    fail "front redirects the redirector's blob requests to storage" \
        "no blob request got 307 at the front during resolve pulls"
fi

# distribution logs each response as a JSON "response completed" line. The
# front only ever sends HEAD to the registry for blobs, so a GET of a blob
# there would mean a blob body left the registry.
registry_blob_gets=$(jq -R '
    fromjson? // empty
    | select((.msg // "") | startswith("response completed"))
    | select(.["http.request.method"] == "GET")
    | select((.["http.request.uri"] // "") | test("/blobs/sha256:"))
    | 1' "$REGISTRY_LOG" | wc -l)
check_eq "registry sends no blob body" 0 "$registry_blob_gets"

# The redirector's access-log lines carry bytes=N, the body bytes sent to
# the client, for the requests it resolved.
body_sizes=$(grep -F 'registry_redirect::access:' "$RESOLVE_LOG" | grep -oE ' bytes=[0-9]+' | cut -d= -f2 || true)
if [[ -z "$body_sizes" ]]; then
    fail "redirector sends only document-sized bodies" "no access-log line with a bytes field in redirector-resolve.log"
else
    largest=$(sort -n <<<"$body_sizes" | tail -n 1)
    if ((largest <= MAX_DOCUMENT_BYTES)); then
        pass "redirector sends only document-sized bodies ($(wc -l <<<"$body_sizes") lines, largest $largest bytes)"
    else
        fail "redirector sends only document-sized bodies" \
            "an access-log line has bytes=$largest, more than $MAX_DOCUMENT_BYTES"
    fi
fi

# The resolved requests name their rule and upstream as redirects do, so
# the same log queries find both.
private_lines=$(grep -F 'registry_redirect::access:' "$RESOLVE_LOG" |
    grep -E "path=\"/v2/$PRIVATE_REPOSITORY/(manifests|blobs)/" | grep -F 'outcome="resolve"' || true)
if [[ -z "$private_lines" ]]; then
    fail "redirector logs rule and upstream of resolved requests" \
        "no access-log line with outcome=\"resolve\" for /v2/$PRIVATE_REPOSITORY/"
else
    check_eq "redirector logs rule and upstream of resolved requests" "" \
        "$(grep -vF 'rule="private" upstream="front-credentials"' <<<"$private_lines" | head -n 1)"
fi

issuer_from_client=$(jq -c --arg ip "$CLIENT_A_IP" 'select(.client == $ip)' <<<"$issuer_lines" | wc -l)
check_eq "client A never contacts the token issuer" 0 "$issuer_from_client"
issuer_user_pulls=$(jq -c --arg user "$USERNAME" --arg name "$PRIVATE_REPOSITORY" '
    select(.account == $user and .status == 200)
    | select(any(.access[]?; .name == $name and (.actions | index("pull"))))' <<<"$issuer_lines" | wc -l)
if ((issuer_user_pulls > 0)); then
    pass "redirector gets the private pull token with the password_file credentials"
else
    fail "redirector gets the private pull token with the password_file credentials" \
        "the issuer logs no token for $USERNAME with pull on $PRIVATE_REPOSITORY"
fi

if kill -0 "$resolve_pid" 2>/dev/null; then
    pass "resolve redirector still runs after all requests"
else
    fail "resolve redirector still runs after all requests" "the process exited"
fi

# --- 5. containerd through the plain redirect --------------------------------

readonly CONTAINERD_DIR=$workdir/containerd
readonly CONTAINERD_SOCKET=$CONTAINERD_DIR/containerd.sock
readonly CTR_TIMEOUT_SECS=60

# ctr_client NAMESPACE ARGUMENT...: runs ctr against the test's containerd
# in the containerd namespace NAMESPACE.
ctr_client() {
    local namespace=$1
    shift
    ctr --address "$CONTAINERD_SOCKET" --namespace "$namespace" "$@"
}

# start_containerd: starts containerd with its root, state and sockets in
# the temp dir, and waits until it accepts requests. `ctr content fetch`
# needs only the content store, so the CRI plugin (Kubernetes) is off, and
# so is the opt plugin, which would create /opt/containerd. The
# snapshotters that need special file systems are off to keep its log
# quiet.
start_containerd() {
    mkdir -p "$CONTAINERD_DIR"
    cat >"$CONTAINERD_DIR/config.toml" <<EOF2
version = 2
root = "$CONTAINERD_DIR/root"
state = "$CONTAINERD_DIR/state"
disabled_plugins = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
]

[grpc]
address = "$CONTAINERD_SOCKET"

[ttrpc]
address = "$CONTAINERD_SOCKET.ttrpc"

[debug]
address = ""

[metrics]
address = ""

# Each fetch runs in its own containerd namespace. "isolated" makes it
# download every blob again, where the default would take the blobs that
# another namespace already fetched.
[plugins."io.containerd.metadata.v1.bolt"]
content_sharing_policy = "isolated"
EOF2
    containerd --config "$CONTAINERD_DIR/config.toml" >"$workdir/logs/containerd.log" 2>&1 &
    local pid=$! deadline=$((SECONDS + STARTUP_TIMEOUT_SECS))
    pids+=("$pid")
    until ctr_client default version >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "containerd exited at start (see containerd.log)"
        ((SECONDS < deadline)) || die "containerd did not answer on $CONTAINERD_SOCKET within ${STARTUP_TIMEOUT_SECS}s"
        sleep 0.2
    done
}

# check_containerd_fetch NAME ADDRESS LOG: containerd fetches the image
# through the plain redirector NAME at ADDRESS, whose log is LOG, with its
# token sent to the front and the blobs coming from storage.
check_containerd_fetch() {
    local name=$1 address=$2 log=$3
    local front_mark storage_mark digest stored

    front_mark=$(line_count "$FRONT_LOG")
    storage_mark=$(line_count "$STORAGE_LOG")

    # ctr resolves and fetches in its own process with containerd's
    # resolver (remotes/docker) and writes into the daemon's content store,
    # so it runs in the client's network namespace. Its containerd
    # namespace is NAME.
    if ip netns exec "$NS_C" timeout "$CTR_TIMEOUT_SECS" ctr --address "$CONTAINERD_SOCKET" \
        --namespace "$name" content fetch --plain-http \
        "$address/$REPOSITORY:$TAG" >"$workdir/logs/ctr-fetch-$name.log" 2>&1; then
        pass "containerd fetches $REPOSITORY through $name"
    else
        fail "containerd fetches $REPOSITORY through $name" \
            "ctr content fetch failed: $(tail -n 3 "$workdir/logs/ctr-fetch-$name.log" | tr '\n' ' ')"
    fi

    stored=$(ctr_client "$name" content ls -q 2>/dev/null || true)
    for digest in "$IMAGE_DIGEST" "${ALL_BLOBS[@]}"; do
        if grep -qx "$digest" <<<"$stored"; then
            pass "containerd stores ${digest:7:12} from $name"
        else
            fail "containerd stores ${digest:7:12} from $name" "ctr content ls does not list $digest"
        fi
    done

    wait_for_quiet_log "$log"
    local redirects
    redirects=$(grep -F 'registry_redirect::access:' "$log" |
        grep -F " client=$CLIENT_C_IP " | grep -cF 'outcome="redirect"' || true)
    if ((redirects > 0)); then
        pass "$name redirects containerd's requests ($redirects)"
    else
        fail "$name redirects containerd's requests" \
            "no access-log line with outcome=\"redirect\" client=$CLIENT_C_IP in ${log##*/}"
    fi

    check_storage_sent_blobs "containerd ($name)" "$(lines_after "$STORAGE_LOG" "$storage_mark")" "$CLIENT_C_IP"

    # containerd got a 401 and the challenge at the front, fetched a token
    # and sent it on the next redirect to the front.
    local bearer_blobs
    bearer_blobs=$(lines_after "$FRONT_LOG" "$front_mark" | jq -c --arg ip "$CLIENT_C_IP" '
        select(.client == $ip and (.uri | test("/blobs/sha256:")))
        | select(.authorization == "bearer" and .status == 307)' | wc -l)
    if ((bearer_blobs > 0)); then
        pass "containerd sends its token to the front through $name ($bearer_blobs blob requests)"
    else
        fail "containerd sends its token to the front through $name" \
            "the front logs no blob request from $CLIENT_C_IP with a bearer token and status 307"
    fi
}

say "5. containerd through plain redirects"
start_containerd

# containerd's resolver never sends GET /v2/, so it meets the front's
# challenge with either setting of api_version_check.
readonly ANSWER_CONFIG=$workdir/plain-answer.toml
readonly ANSWER_LOG=$workdir/logs/redirector-plain-answer.log
cat >"$ANSWER_CONFIG" <<EOF2
default_upstream = "front"

# A plain redirect, with GET /v2/ returning 200 locally (the default).
[upstreams.front]
url = "http://$FRONT"
EOF2
say "starting the plain-answer redirector on $PLAIN_ANSWER_REDIRECTOR"
start_redirector redirector-plain-answer "$ANSWER_CONFIG" "$PLAIN_ANSWER_REDIRECTOR"

check_containerd_fetch redirector-plain "$PLAIN_REDIRECTOR" "$PLAIN_LOG"
check_containerd_fetch redirector-plain-answer "$PLAIN_ANSWER_REDIRECTOR" "$ANSWER_LOG"

# --- 6. an upstream that serves blobs itself ---------------------------------

# The registry itself, without the front, sends blob bodies with 200. In
# resolve mode that is an error unless the upstream has blob_proxy, which
# streams the body through the redirector. Client B gets the upstream
# without it, client C the one with it.
readonly DIRECT_CONFIG=$workdir/resolve-direct.toml
readonly DIRECT_LOG=$workdir/logs/redirector-resolve-direct.log
cat >"$DIRECT_CONFIG" <<EOF2
default_upstream = "registry"

[upstreams.registry]
url = "http://$REGISTRY"
auth = "resolve"

[upstreams.registry-proxy]
url = "http://$REGISTRY"
auth = "resolve"
blob_proxy = true

[[rules]]
name = "client-c"
clients = ["$NET_C.0/24"]
upstream = "registry-proxy"
EOF2

say "6. resolve mode with an upstream that serves blobs itself"
start_redirector redirector-resolve-direct "$DIRECT_CONFIG" "$RESOLVE_DIRECT_REDIRECTOR"

readonly DIRECT_BLOB_URL=http://$RESOLVE_DIRECT_REDIRECTOR/v2/$REPOSITORY/blobs/$LARGE_LAYER
readonly DIRECT_BODY=$workdir/direct-blob
refused_status=$(ip netns exec "$NS_B" curl -s -o "$DIRECT_BODY" --max-time "$CURL_TIMEOUT_SECS" \
    -w '%{http_code}' "$DIRECT_BLOB_URL" || true)
check_eq "without blob_proxy, a blob served with 200 gets 502" 502 "$refused_status"
check_eq "without blob_proxy, the error code is UNSUPPORTED" UNSUPPORTED \
    "$(jq -r '.errors[0].code' "$DIRECT_BODY" 2>/dev/null || echo "no JSON body: $(head -c 200 "$DIRECT_BODY")")"

proxied_status=$(ip netns exec "$NS_C" curl -s -o "$DIRECT_BODY" --max-time "$CURL_TIMEOUT_SECS" \
    -w '%{http_code}' "$DIRECT_BLOB_URL" || true)
check_eq "with blob_proxy, the blob is streamed with 200" 200 "$proxied_status"
check_eq "with blob_proxy, the streamed blob has its digest" "$LARGE_LAYER" "sha256:$(sha256_of "$DIRECT_BODY")"

wait_for_quiet_log "$DIRECT_LOG"
streamed_line=$(grep -F 'registry_redirect::access:' "$DIRECT_LOG" | grep -F " client=$CLIENT_C_IP " |
    grep -F "/blobs/$LARGE_LAYER" | head -n 1 || true)
check_eq "with blob_proxy, the access log marks the blob streamed" " streamed=true" \
    "$(grep -oE ' streamed=[a-z]+' <<<"$streamed_line" || echo "no streamed field: $streamed_line")"
check_eq "with blob_proxy, the access log counts the streamed bytes" " bytes=$LARGE_LAYER_SIZE" \
    "$(grep -oE ' bytes=[0-9]+' <<<"$streamed_line" || echo "no bytes field: $streamed_line")"

# --- summary -----------------------------------------------------------------

say "summary: skopeo needs resolve mode for the token-auth front, containerd works with a plain redirect, and blob bytes come from storage"
summarize
