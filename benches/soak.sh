#!/usr/bin/env bash
# Soak run of `registry-redirect serve` on loopback: sustained load while
# the configuration is reloaded every few seconds. Run from the repository
# root:
#
#   benches/soak.sh
#
# The script writes two valid policies (A and B, which send the same
# requests to different upstream hosts) and one invalid file, starts the
# server on 127.0.0.1 with policy A, and runs wrk against it. Meanwhile,
# every RELOAD_EVERY seconds, it renames the next file over the
# configuration (B, A, invalid, A, B, invalid, ...) and sends SIGHUP, and
# every RSS_EVERY seconds it records the server's resident set size
# (VmRSS in /proc/PID/status). The upstream hosts only appear in `Location`
# headers: the server contacts none of them.
#
# wrk's Lua script counts the responses whose status is not 3xx and the
# redirects to policy A's and to policy B's hosts, so the summary shows
# that both policies served traffic.
#
# Settings (environment):
#   SOAK_SECONDS        seconds of load (default 180)
#   RELOAD_EVERY        seconds between reloads (default 3)
#   RSS_EVERY           seconds between RSS samples (default 5)
#   WARMUP_SECONDS      seconds of load before the baseline RSS sample (default 10)
#   RSS_GROWTH_PERCENT  allowed growth of the final RSS over the baseline (default 20)
#   CONNECTIONS         wrk connections (default 32)
#   RR_BIN              the server binary (default
#                       ${CARGO_TARGET_DIR:-target}/release/registry-redirect,
#                       built with cargo when missing)
#   RR_ARGS             extra arguments for `registry-redirect serve`
#
# Needs: wrk, python3 (to check the port). Exits with 1 when any response
# is not a redirect, when the server logged a different number of reloads
# than were sent, or when the final RSS exceeds the baseline by more than
# RSS_GROWTH_PERCENT.

set -euo pipefail

readonly SOAK_SECONDS=${SOAK_SECONDS:-180}
readonly RELOAD_EVERY=${RELOAD_EVERY:-3}
readonly RSS_EVERY=${RSS_EVERY:-5}
readonly WARMUP_SECONDS=${WARMUP_SECONDS:-10}
readonly RSS_GROWTH_PERCENT=${RSS_GROWTH_PERCENT:-20}
readonly CONNECTIONS=${CONNECTIONS:-32}
readonly RR_ARGS=${RR_ARGS:-}
# Upper bound for the server to print its address after it starts.
readonly START_DEADLINE_SECONDS=10
# Time for the server to handle the last SIGHUP before its log is counted.
readonly LAST_RELOAD_GRACE_SECONDS=1

fail() {
    echo "soak.sh: $*" >&2
    exit 1
}

[[ -f Cargo.toml && -d benches ]] ||
    fail "run this script from the repository root (no Cargo.toml and benches/ in $PWD)"
for tool in wrk python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (Debian: apt-get install wrk python3)"
done
for setting in SOAK_SECONDS RELOAD_EVERY RSS_EVERY WARMUP_SECONDS RSS_GROWTH_PERCENT CONNECTIONS; do
    [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || fail "$setting is ${!setting} (expected a positive integer)"
done
((WARMUP_SECONDS < SOAK_SECONDS)) ||
    fail "WARMUP_SECONDS ($WARMUP_SECONDS) must be less than SOAK_SECONDS ($SOAK_SECONDS)"

RR_BIN=${RR_BIN:-${CARGO_TARGET_DIR:-target}/release/registry-redirect}
if [[ ! -x $RR_BIN ]]; then
    echo "building $RR_BIN" >&2
    cargo build --release -p registry-redirect-cli >&2
fi
[[ -x $RR_BIN ]] || fail "no executable at $RR_BIN (set RR_BIN to the registry-redirect binary)"
readonly RR_BIN

WORK=$(mktemp -d -t registry-redirect-soak.XXXXXX)
readonly WORK
SERVER_PID=
WRK_PID=

# Stops wrk and the server if they run: SIGTERM, then SIGKILL after five
# seconds.
stop_processes() {
    local pid tries
    for pid in $WRK_PID $SERVER_PID; do
        kill -TERM "$pid" 2>/dev/null || true
        for ((tries = 0; tries < 50; tries++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    WRK_PID=
    SERVER_PID=
}

cleanup() {
    stop_processes
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Writes a valid policy to $1 whose upstreams live under the host suffix $2.
# Every request the load sends matches a rule or the default, and each
# response is a redirect.
write_policy() {
    cat >"$1" <<EOF
redirect_status = 307
default_upstream = "k8s"

[upstreams.k8s]
url = "https://registry.$2"

[upstreams.hub]
url = "https://hub.$2"
library_prefix = true

[upstreams.mirror]
url = "http://mirror.$2:5000"
path_prefix = "k8s"

[[rules]]
name = "hub-images"
repositories = ["library/nginx", "nginx", "bitnami/*"]
upstream = "hub"

[[rules]]
name = "pause-blobs"
repositories = ["pause"]
kinds = ["blob"]
upstream = "mirror"

[[rules]]
name = "docker-hosts"
hosts = ["docker.io"]
upstream = "hub"
EOF
}

write_policy "$WORK/policy-a.toml" a.example
write_policy "$WORK/policy-b.toml" b.example
# Invalid on purpose: the rule names an upstream that is not defined.
cat >"$WORK/invalid.toml" <<'EOF'
default_upstream = "k8s"

[upstreams.k8s]
url = "https://registry.invalid.example"

[[rules]]
name = "broken"
upstream = "missing"
EOF
readonly CONFIG=$WORK/config.toml
cp "$WORK/policy-a.toml" "$CONFIG"

# Request paths cycle through manifests and blobs that hit each rule and the
# default. GET /v2/ is left out because the server returns 200 for it.
cat >"$WORK/soak.lua" <<'EOF'
local digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
local paths = {
    "/v2/library/nginx/manifests/latest",
    "/v2/nginx/blobs/" .. digest,
    "/v2/bitnami/redis/manifests/7.2",
    "/v2/pause/blobs/" .. digest,
    "/v2/pause/manifests/3.10",
    "/v2/kube-apiserver/blobs/" .. digest,
    "/v2/coredns/coredns/manifests/v1.11.1",
}
local threads = {}
local next_path = 0

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non_redirects = 0
    to_a = 0
    to_b = 0
end

function request()
    next_path = next_path % #paths + 1
    return wrk.format("GET", paths[next_path])
end

function response(status, headers, body)
    if status < 300 or status > 399 then
        non_redirects = non_redirects + 1
        return
    end
    local location = headers["Location"] or headers["location"] or ""
    if string.find(location, ".a.example", 1, true) then
        to_a = to_a + 1
    elseif string.find(location, ".b.example", 1, true) then
        to_b = to_b + 1
    end
end

function done(summary, latency, requests)
    local non3xx, a, b = 0, 0, 0
    for _, thread in ipairs(threads) do
        non3xx = non3xx + thread:get("non_redirects")
        a = a + thread:get("to_a")
        b = b + thread:get("to_b")
    end
    local errors = summary.errors
    -- One line of values in a fixed order, read back by the shell script.
    io.write(string.format(
        "result %d %d %d %d %d %d %d %d %d %d\n",
        summary.requests, non3xx, a, b, errors.connect, errors.read, errors.write, errors.timeout,
        latency:percentile(50), latency:percentile(99)))
end
EOF

# Prints the server's resident set size in KiB.
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"
}

# Start the server with access logging off, so that the log contains the
# reload lines and nothing per request.
# shellcheck disable=SC2086 # RR_ARGS is split into arguments on purpose.
"$RR_BIN" serve --config "$CONFIG" --listen 127.0.0.1:0 \
    --log-level info,registry_redirect::access=off $RR_ARGS \
    >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!

ADDRESS=
for ((tries = 0; tries < START_DEADLINE_SECONDS * 10; tries++)); do
    first_line=$(head -n 1 "$WORK/server.out" 2>/dev/null || true)
    if [[ $first_line == "listening on http://"* ]]; then
        ADDRESS=${first_line#listening on http://}
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited at start: $(cat "$WORK/server.log")"
    sleep 0.1
done
[[ -n $ADDRESS ]] || fail "the server printed no address within $START_DEADLINE_SECONDS s"
[[ $ADDRESS == 127.* ]] || fail "the server listens on $ADDRESS, expected a loopback address"
readonly ADDRESS

rss_start=$(rss_kib)
rss_max=$rss_start
rss_baseline=
echo "server $RR_BIN on $ADDRESS (pid $SERVER_PID), RSS at start ${rss_start} KiB" >&2
echo "wrk -t1 -c$CONNECTIONS -d${SOAK_SECONDS}s, reload every ${RELOAD_EVERY}s, RSS every ${RSS_EVERY}s" >&2

wrk -t1 -c"$CONNECTIONS" -d"${SOAK_SECONDS}s" -s "$WORK/soak.lua" "http://$ADDRESS" \
    >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!

# Reload and sample on whole seconds since the load started, until wrk
# ends. The loop is bounded by the load's duration plus a margin.
reloads_valid=0
reloads_invalid=0
reloads=0
started=$(date +%s)
last_second=0
while kill -0 "$WRK_PID" 2>/dev/null; do
    sleep 0.2
    elapsed=$(($(date +%s) - started))
    ((elapsed > SOAK_SECONDS + 30)) && fail "wrk still runs after $elapsed s"
    ((elapsed == last_second)) && continue
    last_second=$elapsed
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited during the run (a build without SIGHUP reload dies on the first SIGHUP): $(tail -n 20 "$WORK/server.log")"

    if ((elapsed % RSS_EVERY == 0)); then
        rss=$(rss_kib)
        ((rss > rss_max)) && rss_max=$rss
        if [[ -z $rss_baseline ]] && ((elapsed >= WARMUP_SECONDS)); then
            rss_baseline=$rss
        fi
        echo "t=${elapsed}s rss=${rss}KiB reloads=$reloads" >&2
    fi

    # Stop reloading a second before the load ends, so that every reload
    # is handled while the server is under load.
    if ((elapsed % RELOAD_EVERY == 0 && elapsed < SOAK_SECONDS - 1)); then
        reloads=$((reloads + 1))
        case $((reloads % 3)) in
            1) next=policy-b.toml ;;
            2) next=policy-a.toml ;;
            0) next=invalid.toml ;;
        esac
        # Rename, so that the server never reads a half-written file.
        cp "$WORK/$next" "$WORK/config.next"
        mv -f "$WORK/config.next" "$CONFIG"
        kill -HUP "$SERVER_PID"
        if [[ $next == invalid.toml ]]; then
            reloads_invalid=$((reloads_invalid + 1))
        else
            reloads_valid=$((reloads_valid + 1))
        fi
    fi
done
wait "$WRK_PID" || fail "wrk failed: $(cat "$WORK/wrk.out")"
WRK_PID=
sleep "$LAST_RELOAD_GRACE_SECONDS"

rss_end=$(rss_kib)
((rss_end > rss_max)) && rss_max=$rss_end
[[ -n $rss_baseline ]] || rss_baseline=$rss_end
logged_reloaded=$(grep -c "configuration reloaded" "$WORK/server.log" || true)
logged_failed=$(grep -c "reload failed" "$WORK/server.log" || true)
logged_panics=$(grep -c "panicked" "$WORK/server.log" || true)
stop_processes

result=$(grep '^result ' "$WORK/wrk.out") || fail "wrk printed no result line: $(cat "$WORK/wrk.out")"
read -r _ wrk_requests wrk_non_3xx wrk_to_a wrk_to_b wrk_connect_errors wrk_read_errors \
    wrk_write_errors wrk_timeouts wrk_p50_us wrk_p99_us <<<"$result"
socket_errors=$((wrk_connect_errors + wrk_read_errors + wrk_write_errors + wrk_timeouts))
growth_percent=$(((rss_end - rss_baseline) * 100 / rss_baseline))

cat <<EOF
duration_s=$SOAK_SECONDS
requests=$wrk_requests
requests_per_s=$((wrk_requests / SOAK_SECONDS))
latency_p50_us=$wrk_p50_us
latency_p99_us=$wrk_p99_us
non_3xx=$wrk_non_3xx
redirects_to_policy_a=$wrk_to_a
redirects_to_policy_b=$wrk_to_b
socket_errors=$socket_errors (connect $wrk_connect_errors, read $wrk_read_errors, write $wrk_write_errors, timeout $wrk_timeouts)
reloads_sent=$reloads (valid $reloads_valid, invalid $reloads_invalid)
log_configuration_reloaded=$logged_reloaded
log_reload_failed=$logged_failed
log_panics=$logged_panics
rss_start_kib=$rss_start
rss_after_warmup_kib=$rss_baseline
rss_max_kib=$rss_max
rss_end_kib=$rss_end
rss_growth_after_warmup_percent=$growth_percent
EOF

status=0
if ((wrk_non_3xx > 0)); then
    echo "soak.sh: $wrk_non_3xx responses were not redirects (expected 0)" >&2
    status=1
fi
if ((logged_reloaded != reloads_valid || logged_failed != reloads_invalid)); then
    echo "soak.sh: the server logged $logged_reloaded reloads and $logged_failed failures, expected $reloads_valid and $reloads_invalid" >&2
    status=1
fi
if ((logged_panics > 0)); then
    echo "soak.sh: the server log contains $logged_panics panics" >&2
    status=1
fi
if ((rss_end * 100 > rss_baseline * (100 + RSS_GROWTH_PERCENT))); then
    echo "soak.sh: RSS grew from $rss_baseline KiB after warm-up to $rss_end KiB at the end (allowed: $RSS_GROWTH_PERCENT%)" >&2
    status=1
fi
exit "$status"
