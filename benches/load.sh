#!/usr/bin/env bash
# Load comparison of `registry-redirect serve` with nginx and with a bare
# hyper server, on loopback. Run from the repository root:
#
#   REGISTRY_REDIRECT_DATA_DIR=/path/to/data benches/load.sh
#
# $REGISTRY_REDIRECT_DATA_DIR/cloud-ranges.txt contains the published cloud
# ranges, one `PREFIX CLOUD REGION` a line. From it the script writes, into
# a temporary directory, three servers that do the same job:
#
#   A  registry-redirect with the full cloud policy: AWS clients get blobs
#      from a regional blob store, GCP clients a regional registry, and
#      everyone else registry.k8s.io.
#   B  nginx with a `geo` table of the same prefixes and `return 307` to the
#      URL that registry-redirect gives.
#   C  hyper-ceiling, which answers every request with one fixed 307: the
#      ceiling for a hyper server on this machine.
#
# Each server runs alone, pinned to CPU 0, and wrk runs pinned to CPU 1. The
# servers take turns in ROUNDS interleaved rounds (A B C A B C ...), so that
# drift on a shared machine hits all of them alike. Every request comes from
# 127.0.0.1, which matches no range, so each answer is a redirect to the
# default registry after a full lookup.
#
# Settings (environment):
#   ROUNDS          rounds of A, B and C (default 7)
#   DURATION        seconds of load per server and round (default 10)
#   CONNECTIONS     wrk connections (default 64)
#   WARMUP          seconds of the counted check run before each measurement (default 2)
#   STARTUPS        start-to-accepting measurements of registry-redirect (default 5)
#   RR_ARGS         extra arguments for `registry-redirect serve`
#   SKIP_BUILD=1    use the release binaries already built
#
# For each server it prints requests/s, requests per CPU-second, latency,
# non-3xx responses, and the median CPU time per request split into user
# space and kernel, which shows where a gap between two servers lies. The
# p99 latency comes twice: as wrk reports it, and for the requests actually
# sent ("raw"). Next to them are the share of samples that wrk added for
# stalled connections and the steal time of the two CPUs during the round
# (see measure below).
#
# Needs: cargo, nginx, wrk, taskset, python3, two CPUs (Debian: apt-get
# install nginx-light wrk util-linux python3). The last line is
# `ratio_vs_nginx=X ratio_vs_ceiling=Y`: the medians of the per-round ratios
# of registry-redirect's requests per second to nginx's and to the
# ceiling's.

set -euo pipefail

readonly ROUNDS=${ROUNDS:-7}
readonly DURATION=${DURATION:-10}
readonly CONNECTIONS=${CONNECTIONS:-64}
readonly WARMUP=${WARMUP:-2}
readonly STARTUPS=${STARTUPS:-5}
readonly RR_ARGS=${RR_ARGS:-}
readonly DIGEST=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
readonly REQUEST_PATH=/v2/library/nginx/blobs/$DIGEST
# Upper bound for a server to accept connections after it starts.
readonly START_DEADLINE_SECONDS=10

fail() {
    echo "load.sh: $*" >&2
    exit 1
}

if [[ -z ${REGISTRY_REDIRECT_DATA_DIR:-} ]]; then
    fail "REGISTRY_REDIRECT_DATA_DIR is not set (expected the directory that holds cloud-ranges.txt)"
fi
readonly RANGES=$REGISTRY_REDIRECT_DATA_DIR/cloud-ranges.txt
if [[ ! -r $RANGES ]]; then
    fail "cannot read $RANGES (expected the published ranges, one 'PREFIX CLOUD REGION' a line)"
fi
[[ -f Cargo.toml && -f benches/cloud-policy.toml ]] ||
    fail "run this script from the repository root (no Cargo.toml and benches/cloud-policy.toml in $PWD)"
for tool in cargo nginx wrk taskset python3 getconf; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (Debian: apt-get install nginx-light wrk)"
done
(($(nproc) >= 2)) || fail "needs two CPUs, one for the servers and one for wrk (nproc: $(nproc))"

TARGET_DIR=${CARGO_TARGET_DIR:-target}
readonly RR_BIN=$TARGET_DIR/release/registry-redirect
readonly CEILING_BIN=$TARGET_DIR/release/hyper-ceiling
CLK_TCK=$(getconf CLK_TCK)
readonly CLK_TCK

WORK=$(mktemp -d -t registry-redirect-load.XXXXXX)
readonly WORK
SERVER_PID=

# Stops the server that is running, if any: SIGTERM, then SIGKILL after
# five seconds.
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local tries
    for ((tries = 0; tries < 50; tries++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints a free loopback port.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts connections. Fails with the end of the
# server's log $2 when the server exits first or after the deadline.
wait_for_port() {
    local port=$1 log=$2 status=0
    python3 - "$port" "$START_DEADLINE_SECONDS" "$SERVER_PID" <<'EOF' || status=$?
import socket, sys, time
port, deadline, pid = int(sys.argv[1]), time.monotonic() + float(sys.argv[2]), sys.argv[3]
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        pass
    # An exited server stays a zombie until the script waits for it.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            exited = stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        exited = True
    if exited:
        sys.exit(2)
    time.sleep(0.01)
sys.exit(1)
EOF
    case $status in
    0) return 0 ;;
    2) echo "load.sh: the server exited before it accepted connections on 127.0.0.1:$port" >&2 ;;
    *) echo "load.sh: timed out after $START_DEADLINE_SECONDS s waiting for 127.0.0.1:$port to accept connections" >&2 ;;
    esac
    echo "load.sh: the end of its log ($log):" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
}

# ---- build -----------------------------------------------------------------

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "building release binaries into $TARGET_DIR" >&2
    cargo build --release --quiet -p registry-redirect-cli --bin registry-redirect
    cargo build --release --quiet -p registry-redirect-benches --bin hyper-ceiling
fi
[[ -x $RR_BIN && -x $CEILING_BIN ]] || fail "missing $RR_BIN or $CEILING_BIN (build them, or unset SKIP_BUILD)"

# ---- configurations --------------------------------------------------------

cp "$RANGES" "$WORK/cloud-ranges.txt"

PORT_A=$(free_port)
PORT_B=$(free_port)
PORT_C=$(free_port)
readonly PORT_A PORT_B PORT_C

{
    echo "listen = \"127.0.0.1:$PORT_A\""
    cat benches/cloud-policy.toml
} >"$WORK/registry-redirect.toml"
"$RR_BIN" check "$WORK/registry-redirect.toml" >/dev/null ||
    fail "registry-redirect rejects the generated configuration $WORK/registry-redirect.toml"

# The geo table maps each prefix to "CLOUD:REGION" (GLOBAL and empty regions
# to "CLOUD:", which no regional upstream serves, as in registry-redirect).
# Comment lines are skipped; for a repeated prefix the last line wins, as
# with registry-redirect's plain format.
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/temp"
awk '
    /^#/ || NF < 2 { next }
    {
        region = ($3 == "GLOBAL") ? "" : $3
        label[$1] = $2 ":" region
        if (!($1 in seen)) { seen[$1] = 1; order[++count] = $1 }
    }
    END { for (i = 1; i <= count; i++) printf "    %s \"%s\";\n", order[i], label[order[i]] }
' "$RANGES" >"$WORK/nginx/geo.conf"

cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    client_body_temp_path $WORK/nginx/temp/body;
    proxy_temp_path $WORK/nginx/temp/proxy;
    fastcgi_temp_path $WORK/nginx/temp/fastcgi;
    uwsgi_temp_path $WORK/nginx/temp/uwsgi;
    scgi_temp_path $WORK/nginx/temp/scgi;
    server_tokens off;
    keepalive_requests 1000000;

    geo \$rr_label {
        default "";
        include $WORK/nginx/geo.conf;
    }
    map \$rr_label \$rr_aws_region {
        default "";
        "~^aws:(?<region>.+)\$" \$region;
    }
    map \$rr_label \$rr_gcp_region {
        default "";
        "~^gcp:(?<region>.+)\$" \$region;
    }

    server {
        listen 127.0.0.1:$PORT_B;
        add_header Cache-Control private always;
        add_header Docker-Distribution-Api-Version registry/2.0 always;

        location = /v2/ {
            return 200 "{}";
        }
        location ~ "^/v2/(?<rr_name>.+)/blobs/(?<rr_digest>sha256:[0-9a-f]{64})\$" {
            if (\$rr_aws_region) {
                return 307 https://prod-registry-k8s-io-\$rr_aws_region.s3.dualstack.\$rr_aws_region.amazonaws.com/containers/images/\$rr_digest;
            }
            if (\$rr_gcp_region) {
                return 307 https://\$rr_gcp_region-docker.pkg.dev/v2/k8s-artifacts-prod/images/\$rr_name/blobs/\$rr_digest;
            }
            return 307 https://registry.k8s.io\$request_uri;
        }
        location ~ "^/v2/(?<rr_rest>.+)\$" {
            if (\$rr_gcp_region) {
                return 307 https://\$rr_gcp_region-docker.pkg.dev/v2/k8s-artifacts-prod/images/\$rr_rest;
            }
            return 307 https://registry.k8s.io\$request_uri;
        }
    }
}
EOF
nginx -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" ||
    fail "nginx rejects the generated configuration $WORK/nginx/nginx.conf"

# With the argument "count", counts the responses whose status is not 3xx.
# Without it, the script defines no `response` function, because wrk then
# hands every response's headers and body to Lua, which halves the load one
# wrk thread can send (45,000 to 25,000 requests/s against hyper-ceiling on
# the machine of docs/performance.md). So the measured runs rely on wrk's
# own count of 4xx and 5xx responses, and a counted check run of WARMUP
# seconds precedes each of them. Either way, `done` prints one line for
# the script to parse.
cat >"$WORK/count.lua" <<'EOF'
local threads = {}
function setup(thread)
    table.insert(threads, thread)
end
function init(args)
    non_redirects = 0
    if args[1] == "count" then
        response = function(status, headers, body)
            if status < 300 or status > 399 then
                non_redirects = non_redirects + 1
            end
        end
    end
end
function done(summary, latency, requests)
    local non3xx = 0
    for _, thread in ipairs(threads) do
        non3xx = non3xx + thread:get("non_redirects")
    end
    local errors = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non3xx=%d status_errors=%d socket_errors=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        non3xx, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
    -- The latency histogram, one "MICROSECONDS COUNT" line per value, for
    -- the p99 of the requests sent (see measure). wrk finds each value by
    -- a walk from the smallest, so the export costs the number of values
    -- times their range. After a stall of seconds that would take minutes,
    -- so the file stays empty then.
    local path = os.getenv("LOAD_HISTOGRAM")
    if path then
        local out = assert(io.open(path, "w"))
        if #latency * (latency.max - latency.min + 1) <= 2e9 then
            for i = 1, #latency do
                local value, count = latency(i)
                out:write(string.format("%d %d\n", value, count))
            end
        end
        out:close()
    end
end
EOF

# ---- servers ---------------------------------------------------------------

# Starts server $1 (A, B or C) pinned to CPU 0, with its log in $2, and
# waits until it accepts connections.
start_server() {
    local name=$1 log=$2
    case $name in
    A)
        # shellcheck disable=SC2086 # RR_ARGS is a list of arguments.
        taskset -c 0 "$RR_BIN" serve --config "$WORK/registry-redirect.toml" \
            --log-level "${RR_LOG_LEVEL:-warn}" $RR_ARGS >"$WORK/A.stdout" 2>"$log" &
        SERVER_PID=$!
        wait_for_port "$PORT_A" "$log"
        ;;
    B)
        taskset -c 0 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' \
            >/dev/null 2>"$log" &
        SERVER_PID=$!
        wait_for_port "$PORT_B" "$log"
        ;;
    C)
        taskset -c 0 "$CEILING_BIN" --listen "127.0.0.1:$PORT_C" >/dev/null 2>"$log" &
        SERVER_PID=$!
        wait_for_port "$PORT_C" "$log"
        ;;
    esac
}

port_of() {
    case $1 in
    A) echo "$PORT_A" ;;
    B) echo "$PORT_B" ;;
    C) echo "$PORT_C" ;;
    esac
}

# Prints the CPU time, in clock ticks, of process $1 and its children
# (nginx's worker is a child of its master), as "USER SYSTEM": utime and
# stime, fields 14 and 15 of /proc/PID/stat, which for a process cover all
# of its threads.
cpu_ticks() {
    local user=0 system=0 pid fields
    for pid in "$1" $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
        [[ -r /proc/$pid/stat ]] || continue
        # The second field, (comm), may hold spaces: drop it first.
        fields=$(sed 's/^.*) //' "/proc/$pid/stat")
        # After the cut, field 14 is at position 12 and field 15 at 13.
        user=$((user + $(awk '{print $12}' <<<"$fields")))
        system=$((system + $(awk '{print $13}' <<<"$fields")))
    done
    echo "$user $system"
}

# Prints the steal time of CPUs 0 and 1 together, in clock ticks: the time
# a hypervisor ran something else while these virtual CPUs had work. It is
# field 9 of their lines in /proc/stat, and 0 on a machine that is not
# virtual.
steal_ticks() {
    awk '/^cpu[01] / { sum += $9 } END { print sum + 0 }' /proc/stat
}

# Runs wrk against server $1: a counted check run of WARMUP seconds, then
# the measurement, whose latency histogram goes to file $2. Prints "RPS
# CPU_SECONDS USER_SECONDS SYSTEM_SECONDS P50_US P99_US RAW_P99_US
# ADDED_PERCENT STEAL_MS NON3XX_IN_CHECK STATUS_4XX_5XX SOCKET_ERRORS".
#
# P99_US is wrk's figure. Before it reports, wrk corrects for coordinated
# omission: for each response that took longer than two mean intervals
# between requests on one connection, it adds samples for the requests that
# connection would have sent meanwhile. RAW_P99_US is the p99 of the
# requests actually sent, from the histogram with those samples taken out
# again. ADDED_PERCENT is the share of samples wrk added. It is about the
# share of the round in which the connections were stalled, so once it
# nears 1% it decides P99_US (see docs/performance.md). Both are -1 when wrk
# wrote no histogram.
measure() {
    local name=$1 histogram=$2 url check before after steal_before steal_after line
    url=http://127.0.0.1:$(port_of "$name")$REQUEST_PATH
    check=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$WORK/count.lua" "$url" -- count |
        grep '^RESULT ')
    before=$(cpu_ticks "$SERVER_PID")
    steal_before=$(steal_ticks)
    line=$(LOAD_HISTOGRAM=$histogram taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s "$WORK/count.lua" "$url" | grep '^RESULT ')
    steal_after=$(steal_ticks)
    after=$(cpu_ticks "$SERVER_PID")
    python3 - "$line" "$check" "$before" "$after" "$CLK_TCK" "$histogram" "$CONNECTIONS" \
        $((steal_after - steal_before)) <<'EOF'
import math
import sys
parse = lambda line: dict(item.split("=") for item in line.split()[1:])
fields, check = parse(sys.argv[1]), parse(sys.argv[2])
before, after = sys.argv[3].split(), sys.argv[4].split()
user, system = ((int(a) - int(b)) / int(sys.argv[5]) for a, b in zip(after, before))
cpu = user + system
requests, duration_us = int(fields["requests"]), int(fields["duration_us"])
rps = requests / (duration_us / 1e6)

histogram = {}
for line in open(sys.argv[6]):
    value, count = line.split()
    histogram[int(value)] = int(count)
# wrk's correction, undone. wrk walks the values upwards and, for a value
# of at least two intervals, adds its count at value - interval, value -
# 2 * interval, ... while above one interval. So, walking downwards, each
# value's own count is what is left after the additions from above.
# Requests beyond wrk's timeout are in neither histogram.
raw = histogram
per_connection = requests // int(sys.argv[7])
if per_connection > 0:
    interval = duration_us // per_connection
    raw, added = {}, {}
    for value in sorted(histogram, reverse=True):
        own = max(histogram[value] - added.get(value, 0), 0)
        raw[value] = own
        if own and value >= 2 * interval:
            lower = value - interval
            while lower > interval:
                added[lower] = added.get(lower, 0) + own
                lower -= interval

def percentile(counts, p):
    # The first value whose running count reaches wrk's rank, C's
    # round(p / 100 * count + 0.5), which rounds halves up.
    rank, running = math.floor(p / 100 * sum(counts.values()) + 1), 0
    for value in sorted(counts):
        running += counts[value]
        if running >= rank:
            return value
    return 0

reported = sum(histogram.values())
if reported:
    raw_p99 = percentile(raw, 99)
    added_percent = 100 * (reported - sum(raw.values())) / reported
else:
    raw_p99, added_percent = -1, -1

steal_ms = int(sys.argv[8]) * 1000 // int(sys.argv[5])
print(f'{rps:.0f} {cpu:.2f} {user:.2f} {system:.2f} {fields["p50_us"]} {fields["p99_us"]} '
      f'{raw_p99} {added_percent:.2f} {steal_ms} {check["non3xx"]} '
      f'{fields["status_errors"]} {int(fields["socket_errors"]) + int(check["socket_errors"])}')
EOF
}

peak_rss_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

# ---- rounds ----------------------------------------------------------------

RESULTS=$WORK/results.txt
: >"$RESULTS"
PEAK_RSS=0
echo "servers on CPU 0, wrk on CPU 1: -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, GET $REQUEST_PATH" >&2
for ((round = 1; round <= ROUNDS; round++)); do
    for name in A B C; do
        start_server "$name" "$WORK/$name.log"
        read -r rps cpu user system p50 p99 raw_p99 added steal non3xx status_errors socket_errors \
            < <(measure "$name" "$WORK/latency-$round-$name.txt")
        if [[ $name == A ]]; then
            rss=$(peak_rss_kib "$SERVER_PID")
            ((rss > PEAK_RSS)) && PEAK_RSS=$rss
        fi
        stop_server
        echo "$round $name $rps $cpu $user $system $p50 $p99 $raw_p99 $added $steal $non3xx $status_errors $socket_errors" \
            >>"$RESULTS"
        echo "round $round $name: $rps requests/s" >&2
    done
done

# One more run of registry-redirect with the access log on, written to a
# file, for the cost of logging every request.
RR_LOG_LEVEL=info start_server A "$WORK/access.log"
read -r log_rps log_cpu _ _ log_p50 log_p99 log_raw_p99 _ _ log_non3xx _ _ < <(measure A "$WORK/latency-log.txt")
stop_server
log_lines=$(wc -l <"$WORK/access.log")

# Start-to-accepting: from the spawn of registry-redirect to the first
# accepted connection, polled in a tight loop from CPU 1.
STARTUP_MS=$(taskset -c 1 python3 - "$RR_BIN" "$WORK/registry-redirect.toml" "$PORT_A" "$STARTUPS" <<'EOF'
import socket, statistics, subprocess, sys, time
binary, config, port, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
times = []
for _ in range(runs):
    started = time.monotonic()
    child = subprocess.Popen(
        ["taskset", "-c", "0", binary, "serve", "--config", config, "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < 10:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                times.append((time.monotonic() - started) * 1000)
                break
            except OSError:
                pass
    finally:
        child.terminate()
        child.wait(timeout=10)
print(" ".join(f"{t:.1f}" for t in times), f"median={statistics.median(times):.1f}" if times else "median=none")
EOF
)

# ---- report ----------------------------------------------------------------

python3 - "$RESULTS" <<EOF
import math, statistics, sys
from collections import defaultdict

def median(values):
    # NaN (a figure that is unknown) is left out.
    known = [value for value in values if not math.isnan(value)]
    return statistics.median(known) if known else float("nan")

def ratio(a, b):
    return a / b if b else float("nan")

def known_or_nan(value, scale):
    # measure prints -1 for a raw p99 or added share that it could not get.
    return float("nan") if float(value) < 0 else float(value) / scale

rows = [line.split() for line in open(sys.argv[1])]
names = {"A": "registry-redirect", "B": "nginx", "C": "hyper-ceiling"}
print()
print(f"{'round':>5} {'server':<18} {'req/s':>9} {'req/CPU-s':>10} {'p50 ms':>7} {'p99 ms':>7} {'raw p99':>8} {'added %':>8} {'steal ms':>8} {'non-3xx':>8} {'4xx/5xx':>8} {'sock err':>8}")
by_server = defaultdict(list)
by_round = defaultdict(dict)
for round_, name, rps, cpu, user, system, p50, p99, raw_p99, added, steal, non3xx, status_errors, socket_errors in rows:
    rps, cpu = float(rps), float(cpu)
    per_cpu = rps * $DURATION / cpu if cpu > 0 else float("nan")
    # CPU microseconds per request, in user space and in the kernel.
    requests = rps * $DURATION
    user_us = float(user) * 1e6 / requests if requests > 0 else float("nan")
    system_us = float(system) * 1e6 / requests if requests > 0 else float("nan")
    row = (rps, per_cpu, int(p50) / 1000, int(p99) / 1000, int(non3xx), int(status_errors), int(socket_errors), user_us, system_us,
           known_or_nan(raw_p99, 1000), known_or_nan(added, 1), int(steal))
    by_server[name].append(row)
    by_round[round_][name] = row
    print(f"{round_:>5} {names[name]:<18} {rps:9.0f} {per_cpu:10.0f} {row[2]:7.2f} {row[3]:7.2f} {row[9]:8.2f} {row[10]:8.2f} {row[11]:8d} {row[4]:8d} {row[5]:8d} {row[6]:8d}")

print()
print("medians per server")
for name in "ABC":
    rows_ = by_server[name]
    med = lambda i: median([r[i] for r in rows_])
    print(f"  {names[name]:<18} {med(0):9.0f} req/s {med(1):10.0f} req/CPU-s  p50 {med(2):.2f} ms  p99 {med(3):.2f} ms  non-3xx {sum(r[4] for r in rows_)}  4xx/5xx {sum(r[5] for r in rows_)}  socket errors {sum(r[6] for r in rows_)}")
    print(f"  {'':<18} raw p99 {med(9):.2f} ms  added {med(10):.2f} %  steal {med(11):.0f} ms  CPU per request: user {med(7):.2f} us, kernel {med(8):.2f} us")

print()
print(f"{'round':>5} {'rps A/B':>8} {'rps A/C':>8} {'cpu-eff A/B':>12} {'cpu-eff A/C':>12} {'p99 A/B':>8} {'raw p99 A/B':>12}")
ratios = defaultdict(list)
keys = ("ab", "ac", "eff_ab", "eff_ac", "p99_ab", "raw_p99_ab")
for round_, row in sorted(by_round.items(), key=lambda item: int(item[0])):
    a, b, c = row["A"], row["B"], row["C"]
    values = (ratio(a[0], b[0]), ratio(a[0], c[0]), ratio(a[1], b[1]), ratio(a[1], c[1]), ratio(a[3], b[3]), ratio(a[9], b[9]))
    for key, value in zip(keys, values):
        ratios[key].append(value)
    print(f"{round_:>5} {values[0]:8.2f} {values[1]:8.2f} {values[2]:12.2f} {values[3]:12.2f} {values[4]:8.2f} {values[5]:12.2f}")
medians = [median(ratios[key]) for key in keys]
print(f"{'median':>5} {medians[0]:8.2f} {medians[1]:8.2f} {medians[2]:12.2f} {medians[3]:12.2f} {medians[4]:8.2f} {medians[5]:12.2f}")

print()
print(f"registry-redirect with the access log on: {float('$log_rps'):.0f} req/s, "
      f"{float('$log_rps') * $DURATION / float('$log_cpu'):.0f} req/CPU-s, p50 {int('$log_p50') / 1000:.2f} ms, "
      f"p99 {int('$log_p99') / 1000:.2f} ms, raw p99 {known_or_nan('$log_raw_p99', 1000):.2f} ms, non-3xx {'$log_non3xx'}, "
      f"{'$log_lines'.strip()} log lines")
print(f"registry-redirect peak RSS (VmHWM) with {sum(1 for l in open('$RANGES') if not l.startswith('#'))} prefixes: {$PEAK_RSS / 1024:.1f} MiB")
print(f"registry-redirect start to accepting, ms: $STARTUP_MS")
print(f"ratio_vs_nginx={median(ratios['ab']):.2f} ratio_vs_ceiling={median(ratios['ac']):.2f}")

# Figures of a server that did not redirect measure something else, so
# the script fails after the report and names the server.
problems = []
for name in "ABC":
    rows_ = by_server[name]
    if any(r[0] == 0 for r in rows_):
        problems.append(f"{names[name]} completed no requests in a round")
    non3xx, status_errors = sum(r[4] for r in rows_), sum(r[5] for r in rows_)
    if non3xx or status_errors:
        problems.append(f"{names[name]} sent {non3xx} non-3xx responses in the checked runs "
                        f"and {status_errors} 4xx/5xx in the measured runs")
if int('$log_non3xx'):
    problems.append("registry-redirect with the access log on sent $log_non3xx non-3xx responses")
for problem in problems:
    print(f"load.sh: {problem}, so these figures do not measure redirects; check that server's configuration and log",
          file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
