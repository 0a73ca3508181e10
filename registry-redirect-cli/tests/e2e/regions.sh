#!/usr/bin/env bash
# End-to-end test: routing by cloud region, blob verification and fallback.
#
# Three registries (Debian's docker-registry, distribution 2.8) store the
# same image. mirror-1 is the mirror of region-a, mirror-2 the mirror of
# region-b, and origin is the default upstream. mirror-1 then loses one
# layer (deleted through the registry API). A plain range file labels the
# client network A "testcloud region-a" and the client network B
# "testcloud region-b". The redirector sends clients of testcloud to the
# regional upstream "mirrors", which verifies blobs with HEAD, probes the
# mirrors' health, and falls back from region-a to region-b.
#
# Checks, from the registries' JSON logs, the redirector's log, `explain`
# and the pulled manifests:
#  1. `check` accepts the config; `explain` names the rule, the region and
#     the candidates in order (mirror-1, mirror-2, origin for region-a).
#  2. A region-a client pulls the image: the layer missing on mirror-1
#     comes from mirror-2, every other blob from mirror-1, and the
#     redirector's HEAD checks reached mirror-1. A region-b client pulls
#     everything from mirror-2.
#  3. Through a second redirector whose config has no fallbacks, the
#     missing layer comes from origin instead.
#  4. mirror-1 is killed. Within a bounded time the health probes mark it
#     down (manifest redirects move to mirror-2), and a new pull takes every
#     blob from mirror-2 and nothing from mirror-1.
#
# Usage: regions.sh PATH_TO_REGISTRY_REDIRECT
#        (or set REGISTRY_REDIRECT_BIN instead of passing the path)
# Needs: root (network namespaces), ip, docker-registry, skopeo, curl, jq,
#        tar, gzip, sha256sum, timeout, flock.
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
readonly REPOSITORY=e2e/regions
readonly REDIRECTOR_PORT=15100
readonly MIRROR_1_PORT=15101
readonly MIRROR_2_PORT=15102
readonly ORIGIN_PORT=15103
readonly NO_FALLBACK_PORT=15104
# The health probes run every second and mark a mirror down after two
# failures in a row, so a killed mirror is down after about 2 s.
readonly HEALTH_DOWN_TIMEOUT_SECS=15

# Names in the redirector config. They are distinct words, so the log
# checks can match them exactly.
readonly CLOUD=testcloud
readonly RULE=testcloud-mirrors
readonly UPSTREAM=mirrors
readonly DEFAULT_UPSTREAM=origin

require_redirector_bin "${1:-}"
check_prerequisites
create_workdir

# --- addresses --------------------------------------------------------------

# The slot layout is described at pick_subnet_slot in lib.sh. Network A is
# labelled region-a, network B region-b.
lock_networks
octet=$(pick_subnet_slot) || die "no free /24 left in 10.200.0.0/16 for the test networks"
readonly SERVICE_IP=10.200.$octet.1
readonly NET_A=10.200.$((octet + 1))
readonly NET_B=10.200.$((octet + 2))
readonly CLIENT_A_IP=$NET_A.2
readonly CLIENT_B_IP=$NET_B.2
readonly MIRROR_1=$SERVICE_IP:$MIRROR_1_PORT
readonly MIRROR_2=$SERVICE_IP:$MIRROR_2_PORT
readonly ORIGIN=$SERVICE_IP:$ORIGIN_PORT
readonly REDIRECTOR=$SERVICE_IP:$REDIRECTOR_PORT
readonly NO_FALLBACK_REDIRECTOR=$SERVICE_IP:$NO_FALLBACK_PORT

# Interface names are at most 15 bytes, and "rr" + PID (<= 7 digits) + 3 fit.
readonly PREFIX=rr$$
readonly NS_A=${PREFIX}-a
readonly NS_B=${PREFIX}-b
readonly LINK_SERVICE=${PREFIX}s0
readonly LINK_SERVICE_PEER=${PREFIX}s1

# --- network ---------------------------------------------------------------

say "network: services on $SERVICE_IP, region-a client $CLIENT_A_IP in $NS_A, region-b client $CLIENT_B_IP in $NS_B"
setup_service_address "$LINK_SERVICE" "$LINK_SERVICE_PEER" "$SERVICE_IP" ||
    die "could not create the service link $LINK_SERVICE"
setup_client_namespace "$NS_A" "$NET_A" "$SERVICE_IP" ||
    die "could not create namespace $NS_A"
setup_client_namespace "$NS_B" "$NET_B" "$SERVICE_IP" ||
    die "could not create namespace $NS_B"
unlock_networks

# --- image -----------------------------------------------------------------

# Three layers, so that one can go missing while others stay.
build=$workdir/build
mkdir -p "$build/base/etc" "$build/tools/bin" "$build/data"
printf 'hello from the registry-redirect region test\n' >"$build/base/hello.txt"
printf 'ID=e2e\n' >"$build/base/etc/os-release"
printf '#!/bin/sh\necho tools layer\n' >"$build/tools/bin/tool"
printf 'data layer\n' >"$build/data/data.txt"

read -r IMAGE_DIGEST CONFIG_BLOB BASE_LAYER MISSING_LAYER DATA_LAYER < <(
    write_image "$workdir/image" "$build/base" "$build/tools" "$build/data"
) || die "could not build the image"
[[ -n "$DATA_LAYER" ]] || die "the image build printed no digests"
readonly ALL_BLOBS=("$CONFIG_BLOB" "$BASE_LAYER" "$MISSING_LAYER" "$DATA_LAYER")
readonly MIRROR_1_BLOBS=("$CONFIG_BLOB" "$BASE_LAYER" "$DATA_LAYER")
say "image $IMAGE_DIGEST; layer $MISSING_LAYER will be missing on mirror-1"

blob_path() {
    echo "/v2/$REPOSITORY/blobs/$1"
}

readonly MANIFEST_PATH=/v2/$REPOSITORY/manifests/$TAG
readonly MISSING_PATH=/v2/$REPOSITORY/blobs/$MISSING_LAYER

# --- registries ------------------------------------------------------------

write_skopeo_policy

say "starting mirror-1 on $MIRROR_1, mirror-2 on $MIRROR_2 and origin on $ORIGIN"
start_registry mirror-1 "$MIRROR_1"
mirror_1_pid=$started_pid
start_registry mirror-2 "$MIRROR_2"
start_registry origin "$ORIGIN"

say "pushing the image to all three"
push_image mirror-1 "$workdir/image" "$MIRROR_1"
push_image mirror-2 "$workdir/image" "$MIRROR_2"
push_image origin "$workdir/image" "$ORIGIN"

check_eq "mirror-1 stores the image" "$IMAGE_DIGEST" "$(stored_digest "$MIRROR_1")"
check_eq "mirror-2 stores the image" "$IMAGE_DIGEST" "$(stored_digest "$MIRROR_2")"
check_eq "origin stores the image" "$IMAGE_DIGEST" "$(stored_digest "$ORIGIN")"

# delete_status URL and head_status URL: the status code of a DELETE or a
# HEAD on URL, or 000 when there is no response.
delete_status() {
    curl -s -o /dev/null --max-time "$CURL_TIMEOUT_SECS" -w '%{http_code}' -X DELETE "$1" || true
}

head_status() {
    curl -s -o /dev/null --max-time "$CURL_TIMEOUT_SECS" -w '%{http_code}' --head "$1" || true
}

# Deleting a blob in distribution 2.8 removes its link from the
# repository, so the registry returns 404 for it there while the manifest
# stays.
check_eq "mirror-1 accepts the layer deletion" 202 "$(delete_status "http://$MIRROR_1$MISSING_PATH")"
check_eq "mirror-1 now lacks the layer (HEAD 404)" 404 "$(head_status "http://$MIRROR_1$MISSING_PATH")"
check_eq "mirror-2 still has the layer (HEAD 200)" 200 "$(head_status "http://$MIRROR_2$MISSING_PATH")"

# --- redirector config -----------------------------------------------------

readonly REDIRECTOR_CONFIG=$workdir/registry-redirect.toml
readonly NO_FALLBACK_CONFIG=$workdir/registry-redirect-no-fallback.toml
readonly REDIRECTOR_LOG=$workdir/logs/registry-redirect.log

# The path in the config is relative, so it resolves against the config
# file's directory.
mkdir -p "$workdir/ranges"
cat >"$workdir/ranges/$CLOUD.txt" <<EOF
# PREFIX CLOUD REGION
$NET_A.0/24 $CLOUD region-a
$NET_B.0/24 $CLOUD region-b
EOF

# write_redirector_config FILE FALLBACKS: FALLBACKS is the TOML line that
# sets the upstream's fallbacks, or empty for none. A killed mirror refuses
# connections at once, so the probe timeout only has to be long enough that
# a busy machine does not fail a live mirror.
write_redirector_config() {
    local file=$1 fallbacks=$2
    cat >"$file" <<EOF
default_upstream = "$DEFAULT_UPSTREAM"

[[client_ranges]]
format = "plain"
path = "ranges/$CLOUD.txt"

[upstreams.$DEFAULT_UPSTREAM]
url = "http://$ORIGIN"

[upstreams.$UPSTREAM]
region_urls = { "region-a" = "http://$MIRROR_1", "region-b" = "http://$MIRROR_2" }
$fallbacks
verify_blobs = true
health_check = { interval_seconds = 1, timeout_ms = 1000, unhealthy_after = 2 }

[[rules]]
name = "$RULE"
clouds = ["$CLOUD"]
upstream = "$UPSTREAM"

# A HEAD check that times out marks its mirror as failing and sends the
# blob elsewhere, so the checks get more than the default 1 s here.
[blob_checks]
timeout_ms = 5000
EOF
}

write_redirector_config "$REDIRECTOR_CONFIG" 'fallbacks = { "region-a" = ["region-b"] }'
write_redirector_config "$NO_FALLBACK_CONFIG" ''

# --- check and explain -----------------------------------------------------

check_output=$workdir/logs/check.log
if "$redirector_bin" check "$REDIRECTOR_CONFIG" >"$check_output" 2>&1; then
    pass "registry-redirect check accepts the config"
else
    fail "registry-redirect check accepts the config" "$(head -c 600 "$check_output")"
fi
# With the range file loaded, a rule on clouds can match, so there is
# nothing to warn about.
check_eq "registry-redirect check prints no warning" 0 "$(grep -c 'warning' "$check_output" || true)"

# explain CONFIG CLIENT_IP PATH: the JSON decision for GET PATH from
# CLIENT_IP, or {} when explain fails.
explain() {
    local output=$workdir/logs/explain.log
    if "$redirector_bin" explain --config "$1" --format json --client "$2" GET "$3" >"$output" 2>&1; then
        cat "$output"
    else
        echo '{}'
    fi
}

# check_explain NAME CONFIG CLIENT_IP REGION EXPECTED_CANDIDATES: explain
# for a blob request names the rule, cloud and REGION, and candidates as
# compact JSON [[upstream, region, location, verify], ...].
check_explain() {
    local name=$1 config=$2 ip=$3 region=$4 expected=$5
    local decision
    decision=$(explain "$config" "$ip" "$MISSING_PATH")

    check_eq "$name: explain decides candidates" candidates "$(jq -r '.decision' <<<"$decision")"
    check_eq "$name: explain names rule $RULE" "$RULE" "$(jq -r '.rule' <<<"$decision")"
    check_eq "$name: explain names cloud $CLOUD" "$CLOUD" "$(jq -r '.cloud' <<<"$decision")"
    check_eq "$name: explain names region $region" "$region" "$(jq -r '.region' <<<"$decision")"
    check_eq "$name: explain lists the candidates in order" "$expected" \
        "$(jq -c '[.candidates[]? | [.upstream, .region, .location, .verify]]' <<<"$decision")"
}

# expected_candidates JQ: the candidate list JQ builds from $up (the
# regional upstream), $default, and $m1, $m2 and $origin (the locations of
# the missing layer on mirror-1, mirror-2 and origin).
expected_candidates() {
    jq -cn --arg up "$UPSTREAM" --arg default "$DEFAULT_UPSTREAM" \
        --arg m1 "http://$MIRROR_1$MISSING_PATH" --arg m2 "http://$MIRROR_2$MISSING_PATH" \
        --arg origin "http://$ORIGIN$MISSING_PATH" "$1"
}

# The $ names in these programs are jq variables, not shell ones.
# shellcheck disable=SC2016
{
    check_explain "region-a client" "$REDIRECTOR_CONFIG" "$CLIENT_A_IP" region-a "$(expected_candidates \
        '[[$up, "region-a", $m1, true], [$up, "region-b", $m2, true], [$default, null, $origin, false]]')"
    check_explain "region-b client" "$REDIRECTOR_CONFIG" "$CLIENT_B_IP" region-b "$(expected_candidates \
        '[[$up, "region-b", $m2, true], [$default, null, $origin, false]]')"
    check_explain "region-a client without fallbacks" "$NO_FALLBACK_CONFIG" "$CLIENT_A_IP" region-a \
        "$(expected_candidates '[[$up, "region-a", $m1, true], [$default, null, $origin, false]]')"
}

# --- log windows -----------------------------------------------------------

# Each pull's checks read only the log lines written after mark_logs.
declare -A log_marks=()
readonly LOGS=(mirror-1 mirror-2 origin registry-redirect registry-redirect-no-fallback)

log_file() {
    case $1 in
    registry-redirect*) echo "$workdir/logs/$1.log" ;;
    *) echo "$workdir/logs/registry-$1.log" ;;
    esac
}

# wait_for_quiet_logs: waits (at most 3 s) until no log grows, so that
# the lines of requests that just finished are in the files.
wait_for_quiet_logs() {
    local name sizes previous="" rounds=0
    while ((rounds < 15)); do
        sizes=""
        for name in "${LOGS[@]}"; do
            sizes+=" $(stat -c %s "$(log_file "$name")" 2>/dev/null || echo 0)"
        done
        [[ "$sizes" == "$previous" ]] && return 0
        previous=$sizes
        sleep 0.2
        rounds=$((rounds + 1))
    done
}

# mark_logs: waits for the logs to settle, then remembers their lengths.
mark_logs() {
    local name file
    wait_for_quiet_logs
    for name in "${LOGS[@]}"; do
        file=$(log_file "$name")
        touch "$file"
        log_marks[$name]=$(wc -l <"$file")
    done
}

# new_log_lines NAME: the lines of log NAME written since mark_logs.
new_log_lines() {
    tail -n "+$((${log_marks[$1]} + 1))" "$(log_file "$1")"
}

# registry_records REGISTRY: one tab-separated record "METHOD URI CLIENT_IP
# USER_AGENT STATUS" per request the registry logged since mark_logs. This
# reads distribution's JSON "response completed" lines and their fields
# http.request.method, http.request.uri, http.request.remoteaddr,
# http.request.useragent and http.response.status.
registry_records() {
    new_log_lines "$1" | jq -rR '
        fromjson? // empty
        | select((.msg // "") | startswith("response completed"))
        | [.["http.request.method"] // "",
           .["http.request.uri"] // "",
           ((.["http.request.remoteaddr"] // "") | sub(":[0-9]+$"; "")),
           .["http.request.useragent"] // "",
           (.["http.response.status"] // 0 | tostring)]
        | @tsv'
}

# count_requests REGISTRY METHOD PATH_PREFIX SENDER [STATUS]: how many
# requests since mark_logs match. METHOD "*" matches every method. SENDER
# is a client address, or "redirector" for the redirector's own requests,
# which carry the user agent registry-redirect/VERSION.
count_requests() {
    local registry=$1 method=$2 prefix=$3 sender=$4 status=${5:-}
    registry_records "$registry" | awk -F '\t' \
        -v method="$method" -v prefix="$prefix" -v sender="$sender" -v status="$status" '
        (method == "*" || $1 == method) && index($2, prefix) == 1 &&
        (sender == "redirector" ? index($4, "registry-redirect/") == 1 : $3 == sender) &&
        (status == "" || $5 == status) { count++ }
        END { print count + 0 }'
}

# check_requested CHECK REGISTRY METHOD PATH SENDER [STATUS]: at least one
# such request since mark_logs.
check_requested() {
    local check=$1 registry=$2 method=$3 path=$4 sender=$5 status=${6:-}
    local count
    count=$(count_requests "$registry" "$method" "$path" "$sender" "$status")
    if ((count > 0)); then
        pass "$check ($count)"
    else
        fail "$check" "the log of $registry shows no $method $path${status:+ with status $status} from $sender in this step"
    fi
}

# check_not_requested CHECK REGISTRY METHOD PATH SENDER: no such request
# since mark_logs.
check_not_requested() {
    check_eq "$1" 0 "$(count_requests "$2" "$3" "$4" "$5")"
}

# short DIGEST: the first 12 hex digits of a sha256 digest, for check names.
short() {
    echo "${1:7:12}"
}

# redirector_blob_checks LOG CLIENT_IP DIGEST: the checks field of each
# access-log line since mark_logs for a blob request for DIGEST from
# CLIENT_IP, one a line. The lines look like
#   ... INFO registry_redirect::access: method=GET path="/v2/.../blobs/DIGEST"
#   kind="blob" ... upstream="mirrors" status=307 micros=4100
#   checks=mirrors/region-a:missing,mirrors/region-b:found client=IP ...
redirector_blob_checks() {
    local log=$1 ip=$2 digest=$3
    new_log_lines "$log" | grep -F 'registry_redirect::access:' |
        grep -F "path=\"$(blob_path "$digest")\"" | grep -F " client=$ip " |
        grep -o ' checks=[^ ]*' | cut -d= -f2 || true
}

# check_redirector_chose CHECK LOG CLIENT_IP DIGEST EXPECTED: every access
# line for the blob names EXPECTED as its checks, and there is at least one.
check_redirector_chose() {
    local check=$1 log=$2 ip=$3 digest=$4 expected=$5
    local checks
    checks=$(redirector_blob_checks "$log" "$ip" "$digest" | sort -u | paste -sd ' ')
    check_eq "$check" "$expected" "$checks"
}

# --- redirectors -----------------------------------------------------------

say "starting registry-redirect on $REDIRECTOR and, without fallbacks, on $NO_FALLBACK_REDIRECTOR"
start_redirector registry-redirect "$REDIRECTOR_CONFIG" "$REDIRECTOR"
redirector_pid=$started_pid
start_redirector registry-redirect-no-fallback "$NO_FALLBACK_CONFIG" "$NO_FALLBACK_REDIRECTOR"
no_fallback_pid=$started_pid

# --- 1 and 2: region-a pull, missing layer from the fallback region ---------

say "pulling as the region-a client ($CLIENT_A_IP)"
mark_logs
pull_through_redirector a "$NS_A"
wait_for_quiet_logs
check_eq "region-a pull receives the image's manifest" "$IMAGE_DIGEST" "$(pulled_digest a)"

check_requested "region-a pull: mirror-1 serves the manifest" \
    mirror-1 GET "/v2/$REPOSITORY/manifests/" "$CLIENT_A_IP"
for blob in "${MIRROR_1_BLOBS[@]}"; do
    check_requested "region-a pull: mirror-1 serves blob $(short "$blob")" \
        mirror-1 GET "$(blob_path "$blob")" "$CLIENT_A_IP"
    check_requested "region-a pull: redirector finds blob $(short "$blob") on mirror-1" \
        mirror-1 HEAD "$(blob_path "$blob")" redirector 200
    check_not_requested "region-a pull: mirror-2 does not serve blob $(short "$blob")" \
        mirror-2 GET "$(blob_path "$blob")" "$CLIENT_A_IP"
done
check_requested "region-a pull: redirector finds the missing layer absent on mirror-1" \
    mirror-1 HEAD "$MISSING_PATH" redirector 404
check_not_requested "region-a pull: client never asks mirror-1 for the missing layer" \
    mirror-1 GET "$MISSING_PATH" "$CLIENT_A_IP"
check_requested "region-a pull: redirector finds the missing layer on mirror-2" \
    mirror-2 HEAD "$MISSING_PATH" redirector 200
check_requested "region-a pull: mirror-2 serves the missing layer" \
    mirror-2 GET "$MISSING_PATH" "$CLIENT_A_IP" 200
check_not_requested "region-a pull: origin gets no request" \
    origin '*' "/v2/$REPOSITORY/" "$CLIENT_A_IP"
check_redirector_chose "region-a pull: redirector log shows the fallback" \
    registry-redirect "$CLIENT_A_IP" "$MISSING_LAYER" \
    "$UPSTREAM/region-a:missing,$UPSTREAM/region-b:found"
check_redirector_chose "region-a pull: redirector log shows mirror-1 for the base layer" \
    registry-redirect "$CLIENT_A_IP" "$BASE_LAYER" "$UPSTREAM/region-a:found"

say "pulling as the region-b client ($CLIENT_B_IP)"
mark_logs
pull_through_redirector b "$NS_B"
wait_for_quiet_logs
check_eq "region-b pull receives the image's manifest" "$IMAGE_DIGEST" "$(pulled_digest b)"
for blob in "${ALL_BLOBS[@]}"; do
    check_requested "region-b pull: mirror-2 serves blob $(short "$blob")" \
        mirror-2 GET "$(blob_path "$blob")" "$CLIENT_B_IP"
done
check_not_requested "region-b pull: mirror-1 gets no request" \
    mirror-1 '*' "/v2/$REPOSITORY/" "$CLIENT_B_IP"
check_not_requested "region-b pull: origin gets no request" \
    origin '*' "/v2/$REPOSITORY/" "$CLIENT_B_IP"

# --- 3: without fallbacks, the missing layer comes from the default --------

say "pulling as the region-a client through the redirector without fallbacks"
mark_logs
pull_through_redirector a-no-fallback "$NS_A" "$NO_FALLBACK_REDIRECTOR"
wait_for_quiet_logs
check_eq "region-a pull without fallbacks receives the image's manifest" \
    "$IMAGE_DIGEST" "$(pulled_digest a-no-fallback)"
check_requested "region-a pull without fallbacks: origin serves the missing layer" \
    origin GET "$MISSING_PATH" "$CLIENT_A_IP" 200
for blob in "${MIRROR_1_BLOBS[@]}"; do
    check_requested "region-a pull without fallbacks: mirror-1 serves blob $(short "$blob")" \
        mirror-1 GET "$(blob_path "$blob")" "$CLIENT_A_IP"
    check_not_requested "region-a pull without fallbacks: origin does not serve blob $(short "$blob")" \
        origin GET "$(blob_path "$blob")" "$CLIENT_A_IP"
done
check_not_requested "region-a pull without fallbacks: mirror-2 gets no request" \
    mirror-2 '*' "/v2/$REPOSITORY/" "$CLIENT_A_IP"
check_redirector_chose "region-a pull without fallbacks: redirector log shows the default" \
    registry-redirect-no-fallback "$CLIENT_A_IP" "$MISSING_LAYER" \
    "$UPSTREAM/region-a:missing,$DEFAULT_UPSTREAM:unverified"
stop_process "$no_fallback_pid"

# --- 4: mirror-1 stops; its clients move to the fallback --------------------

say "killing mirror-1 (pid $mirror_1_pid)"
kill -KILL "$mirror_1_pid"
wait "$mirror_1_pid" 2>/dev/null || true

# manifest_location: where the redirector sends the region-a client for the
# manifest. Manifests need no blob check, so only the health probes move
# this away from mirror-1.
manifest_location() {
    ip netns exec "$NS_A" curl -s -o /dev/null --max-time "$CURL_TIMEOUT_SECS" --head \
        -w '%{redirect_url}' "http://$REDIRECTOR$MANIFEST_PATH" || true
}

stopped_at=$SECONDS
deadline=$((SECONDS + HEALTH_DOWN_TIMEOUT_SECS))
location=$(manifest_location)
while [[ "$location" != "http://$MIRROR_2$MANIFEST_PATH" ]] && ((SECONDS < deadline)); do
    sleep 0.2
    location=$(manifest_location)
done
check_eq "health probes move manifests to mirror-2 within ${HEALTH_DOWN_TIMEOUT_SECS}s" \
    "http://$MIRROR_2$MANIFEST_PATH" "$location"
say "manifest redirects moved after $((SECONDS - stopped_at))s"

wait_for_quiet_logs
unhealthy_lines=$(grep -F 'mirror failed its health probes' "$REDIRECTOR_LOG" |
    grep -F "upstream=\"$UPSTREAM\"" | grep -cF 'region="region-a"' || true)
check_eq "redirector logs mirror-1 as unhealthy once" 1 "$unhealthy_lines"

say "pulling as the region-a client with mirror-1 down"
mark_logs
pull_through_redirector a-after-stop "$NS_A"
wait_for_quiet_logs
check_eq "region-a pull after the stop receives the image's manifest" \
    "$IMAGE_DIGEST" "$(pulled_digest a-after-stop)"
check_requested "region-a pull after the stop: mirror-2 serves the manifest" \
    mirror-2 GET "/v2/$REPOSITORY/manifests/" "$CLIENT_A_IP"
for blob in "${ALL_BLOBS[@]}"; do
    check_requested "region-a pull after the stop: mirror-2 serves blob $(short "$blob")" \
        mirror-2 GET "$(blob_path "$blob")" "$CLIENT_A_IP"
    check_redirector_chose "region-a pull after the stop: redirector skips mirror-1 for blob $(short "$blob")" \
        registry-redirect "$CLIENT_A_IP" "$blob" \
        "$UPSTREAM/region-a:unhealthy,$UPSTREAM/region-b:found"
done
check_not_requested "region-a pull after the stop: mirror-1 logs no request" \
    mirror-1 '*' "/v2/" "$CLIENT_A_IP"
check_not_requested "region-a pull after the stop: origin gets no request" \
    origin '*' "/v2/$REPOSITORY/" "$CLIENT_A_IP"

if kill -0 "$redirector_pid" 2>/dev/null; then
    pass "registry-redirect still runs after all requests"
else
    fail "registry-redirect still runs after all requests" "the process exited"
fi

# --- summary ---------------------------------------------------------------

say "summary: region-a pulled from mirror-1 with the missing layer from mirror-2 (or origin without fallbacks), region-b from mirror-2, region-a from mirror-2 once mirror-1 was down"
summarize
