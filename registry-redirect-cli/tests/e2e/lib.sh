# Shared helpers of the end-to-end scripts (pull.sh, regions.sh,
# resolve.sh): check bookkeeping, cleanup, network namespaces, OCI image
# layouts, registries, the redirector and pulls with skopeo.
#
# Source it right after `set -euo pipefail`. Sourcing installs the cleanup
# trap: on exit (success, failure or SIGINT/SIGTERM) it stops every process
# in `pids`, deletes every namespace in `namespaces` and link in `links`,
# and removes `workdir` unless REGISTRY_REDIRECT_E2E_KEEP=1.
#
# Functions that build image references read the globals REPOSITORY and
# TAG, which the sourcing script sets.
# shellcheck shell=bash

readonly STARTUP_TIMEOUT_SECS=30
readonly SKOPEO_TIMEOUT_SECS=120
# shellcheck disable=SC2034 # used by the scripts that source this file
readonly CURL_TIMEOUT_SECS=10

# Everything the script creates, for cleanup.
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

# summarize: prints the logs when a check failed, then the "N passed,
# M failed" line, and returns 0 only when every check passed.
summarize() {
    if ((failed > 0)); then
        show_logs
    fi
    printf '%s passed, %s failed\n' "$passed" "$failed"
    ((failed == 0))
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
        timeout:coreutils flock:util-linux; do
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

# require_redirector_bin PATH: sets redirector_bin to PATH, or else to
# REGISTRY_REDIRECT_BIN, and stops the run when neither names an executable.
require_redirector_bin() {
    redirector_bin=${1:-${REGISTRY_REDIRECT_BIN:-}}
    if [[ -z "$redirector_bin" ]]; then
        die "no registry-redirect binary: pass its path as the first argument or set REGISTRY_REDIRECT_BIN"
    fi
    if [[ ! -x "$redirector_bin" ]]; then
        die "registry-redirect binary '$redirector_bin' does not exist or is not executable"
    fi
}

# create_workdir: makes the temp dir that contains every file of the run, with
# the logs in its logs/ subdir.
create_workdir() {
    workdir=$(mktemp -d -t registry-redirect-e2e.XXXXXX)
    mkdir -p "$workdir/logs"
    say "temp dir $workdir"
}

# --- addresses --------------------------------------------------------------

# Each run takes the first free slot of four /24s in 10.200.0.0/16, so it
# never meets the addresses of another run or of a run that was killed.
# Within slot S:
#   10.200.S.1/32     the services (registries and redirector), host only;
#                     resolve.sh adds S.2 to S.4 for more services
#   10.200.S+1.0/24   client network A (host .1, namespace .2)
#   10.200.S+2.0/24   client network B (host .1, namespace .2)
#   10.200.S+3.0/24   client network C, used by resolve.sh only; the check
#                     below can skip it, because it belongs to slot S alone
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

# Runs started at the same time (the pull and region tests of two cargo
# test runs) would pick the same free slot. Each run therefore holds this
# lock from picking its slot until its addresses are assigned. The empty
# lock file stays, because another run may hold it at any time.
readonly NETWORK_LOCK_FILE=${TMPDIR:-/tmp}/registry-redirect-e2e-network.lock
readonly NETWORK_LOCK_TIMEOUT_SECS=30
network_lock_fd=""

lock_networks() {
    exec {network_lock_fd}>>"$NETWORK_LOCK_FILE" ||
        die "could not open the network lock file $NETWORK_LOCK_FILE"
    flock -w "$NETWORK_LOCK_TIMEOUT_SECS" "$network_lock_fd" ||
        die "another end-to-end run held $NETWORK_LOCK_FILE for ${NETWORK_LOCK_TIMEOUT_SECS}s"
}

unlock_networks() {
    exec {network_lock_fd}>&-
}

# --- network ---------------------------------------------------------------

# setup_service_address LINK PEER ADDRESS: puts ADDRESS/32 on one end of a
# veth pair kept entirely on the host, because the kernel may lack the dummy
# link type. The host delivers packets for any of its own addresses locally,
# so clients reach it through their veth link without IP forwarding. The
# scripts change no default route, iptables rule or sysctl.
setup_service_address() {
    local link=$1 peer=$2 address=$3
    links+=("$link")
    ip link add "$link" type veth peer name "$peer"
    ip address add "$address/32" dev "$link"
    ip link set "$link" up
    ip link set "$peer" up
}

# add_service_address LINK ADDRESS: puts one more ADDRESS/32 on the host end
# LINK that setup_service_address made, for a script whose services need
# distinct addresses.
add_service_address() {
    ip address add "$2/32" dev "$1"
}

# setup_client_namespace NAMESPACE NETWORK SERVICE_IP...: makes NAMESPACE with
# the address NETWORK.2/24, linked to the host's NETWORK.1, with a route to
# each SERVICE_IP. NETWORK is the first three octets.
setup_client_namespace() {
    local ns=$1 net=$2
    shift 2
    local service_ip
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
    # The only routes out of the namespace lead to the service addresses.
    for service_ip in "$@"; do
        ip -n "$ns" route add "$service_ip/32" via "$net.1"
    done
}

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

# write_image LAYOUT DIR...: writes an OCI image layout at LAYOUT, tagged
# $TAG, with one layer per DIR in the order given, and prints
# "MANIFEST_DIGEST CONFIG_DIGEST LAYER_DIGEST...". The same DIR contents give
# the same digests.
write_image() {
    local layout=$1
    shift
    local scratch=$layout.build
    local digests=() layers='[]' diff_ids='[]'
    local dir number=0 digest size diff_id

    mkdir -p "$layout" "$scratch"
    for dir in "$@"; do
        number=$((number + 1))
        read -r digest size diff_id < <(make_layer "$dir" "$scratch/layer-$number.tar.gz")
        add_blob "$layout" "$scratch/layer-$number.tar.gz" >/dev/null
        digests+=("$digest")
        layers=$(jq -c --arg d "$digest" --argjson s "$size" \
            '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' \
            <<<"$layers")
        diff_ids=$(jq -c --arg id "$diff_id" '. + [$id]' <<<"$diff_ids")
    done

    local config=$scratch/config.json config_size config_digest
    jq -cn --argjson diff_ids "$diff_ids" '{
        architecture: "amd64",
        os: "linux",
        config: {Cmd: ["/hello.txt"]},
        rootfs: {type: "layers", diff_ids: $diff_ids}
    }' >"$config"
    config_size=$(size_of "$config")
    config_digest=$(add_blob "$layout" "$config")

    local manifest=$scratch/manifest.json manifest_size manifest_digest
    jq -cn --arg cd "$config_digest" --argjson cs "$config_size" \
        --argjson layers "$layers" '{
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
        layers: $layers
    }' >"$manifest"
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
    rm -rf "$scratch"

    echo "$manifest_digest $config_digest ${digests[*]}"
}

# --- registries ------------------------------------------------------------

# skopeo reads this policy instead of /etc/containers/policy.json, so the
# test does not depend on the machine's signature policy.
write_skopeo_policy() {
    SKOPEO_POLICY=$workdir/policy.json
    printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$SKOPEO_POLICY"
}

# wait_for_http NAME PID URL [STATUS]: waits until URL returns STATUS
# (default 200), failing early if PID exits.
wait_for_http() {
    local name=$1 pid=$2 url=$3 expected=${4:-200}
    local deadline=$((SECONDS + STARTUP_TIMEOUT_SECS))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$name exited before accepting connections on $url"
        fi
        if [[ "$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)" == "$expected" ]]; then
            return 0
        fi
        sleep 0.2
    done
    die "$name timed out: $url did not return $expected within ${STARTUP_TIMEOUT_SECS}s"
}

# start_registry NAME ADDRESS [AUTH_YAML]: starts a registry (Debian's
# docker-registry, distribution 2.8), waits until it serves, and sets
# started_pid. Its JSON log goes to logs/registry-NAME.log, its blobs to
# storage-NAME/docker/registry/v2/blobs, and blob deletion is enabled.
# AUTH_YAML is the config's top-level auth section, if any.
start_registry() {
    local name=$1 address=$2 auth=${3:-}
    local config=$workdir/registry-$name.yml
    # log.formatter json: the checks read the "response completed" lines
    # with jq. The combined access log goes to stdout.
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
$auth
EOF
    docker-registry serve "$config" \
        >"$workdir/logs/registry-$name.access.log" \
        2>"$workdir/logs/registry-$name.log" &
    started_pid=$!
    pids+=("$started_pid")
    # With auth, /v2/ returns 401 and the challenge to a request without
    # credentials.
    local expected_status=200
    [[ -z "$auth" ]] || expected_status=401
    wait_for_http "registry $name" "$started_pid" "http://$address/v2/" "$expected_status"
}

# push_image NAME LAYOUT ADDRESS
push_image() {
    local name=$1 layout=$2 address=$3
    timeout "$SKOPEO_TIMEOUT_SECS" skopeo --policy "$SKOPEO_POLICY" copy --quiet \
        --preserve-digests --dest-tls-verify=false --dest-no-creds \
        "oci:$layout:$TAG" "docker://$address/$REPOSITORY:$TAG" \
        >"$workdir/logs/push-$name.log" 2>&1 ||
        die "skopeo could not push image $name to $address (see push-$name.log below)"
}

# stored_digest ADDRESS: the digest of the manifest the registry returns.
stored_digest() {
    local raw=$workdir/stored-manifest.json
    timeout "$SKOPEO_TIMEOUT_SECS" skopeo --policy "$SKOPEO_POLICY" inspect --raw \
        --tls-verify=false --no-creds "docker://$1/$REPOSITORY:$TAG" >"$raw" 2>&1 ||
        { cat "$raw"; return 0; }
    echo "sha256:$(sha256_of "$raw")"
}

# --- redirector ------------------------------------------------------------

# start_redirector NAME CONFIG ADDRESS [STATUS]: starts `registry-redirect
# serve` with CONFIG on ADDRESS, waits until GET /v2/ returns STATUS
# (default 200; 307 where /v2/ is redirected), and sets started_pid. Its
# log (stderr) goes to logs/NAME.log. --log-client-addresses adds client=IP
# to each access-log line, which the log checks match on.
start_redirector() {
    local name=$1 config=$2 address=$3 v2_status=${4:-200}
    "$redirector_bin" serve --config "$config" --listen "$address" \
        --log-client-addresses --admin-listen off >"$workdir/logs/$name.stdout" 2>"$workdir/logs/$name.log" &
    started_pid=$!
    pids+=("$started_pid")
    wait_for_http "$name" "$started_pid" "http://$address/v2/" "$v2_status"
}

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

# pull_through_redirector CLIENT NAMESPACE [ADDRESS [CERT_DIR]]: copies the
# tag through the redirector at ADDRESS (default $REDIRECTOR) into the dir:
# layout pulled-CLIENT, as a client in NAMESPACE. With CERT_DIR, skopeo
# speaks HTTPS to ADDRESS and trusts only the CA certificates (*.crt) in
# CERT_DIR; without it, skopeo verifies nothing and falls back to HTTP.
pull_through_redirector() {
    local client=$1 ns=$2 address=${3:-$REDIRECTOR} cert_dir=${4:-}
    local out=$workdir/pulled-$client
    local tls_flags=(--src-tls-verify=false)
    [[ -n "$cert_dir" ]] && tls_flags=(--src-tls-verify=true --src-cert-dir "$cert_dir")
    rm -rf "$out"
    if ip netns exec "$ns" timeout "$SKOPEO_TIMEOUT_SECS" \
        skopeo --policy "$SKOPEO_POLICY" copy --quiet \
        "${tls_flags[@]}" --src-no-creds \
        "docker://$address/$REPOSITORY:$TAG" "dir:$out" \
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
