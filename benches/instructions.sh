#!/usr/bin/env bash
# Instruction counts per request, from callgrind, which do not change with
# the load of the machine as wall-clock figures do. Run from the repository
# root:
#
#   REGISTRY_REDIRECT_DATA_DIR=/path/to/data benches/instructions.sh
#
# It counts the user-space instructions of
#
#   - `registry-redirect serve` (one worker, access log off) with the cloud
#     policy of benches/cloud-policy.toml, per blob redirect;
#   - hyper-ceiling, the bare hyper server of benches/load.sh, per response;
#   - the `decide_loop` example, per blob decision for AWS clients.
#
# Each is run twice under `valgrind --tool=callgrind`, with LOW and HIGH
# requests (or decisions), so that the difference of the two totals divided
# by HIGH - LOW leaves out start-up and shutdown. The servers get keep-alive
# requests from 127.0.0.1 over CONNECTIONS connections, sent by a Python
# client. The kernel's share (loopback TCP, epoll) is not counted.
#
# Settings (environment):
#   LOW, HIGH       requests or decisions of the two runs (default 2000, 12000)
#   CONNECTIONS     client connections (default 16)
#   SKIP_BUILD=1    use the release binaries already built
#
# Needs: cargo, valgrind, python3.

set -euo pipefail

readonly LOW=${LOW:-2000}
readonly HIGH=${HIGH:-12000}
readonly CONNECTIONS=${CONNECTIONS:-16}
readonly DIGEST=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
# Upper bound for a server under valgrind to accept connections.
readonly START_DEADLINE_SECONDS=120

fail() {
    echo "instructions.sh: $*" >&2
    exit 1
}

[[ -n ${REGISTRY_REDIRECT_DATA_DIR:-} ]] ||
    fail "REGISTRY_REDIRECT_DATA_DIR is not set (expected the directory that holds cloud-ranges.txt)"
readonly RANGES=$REGISTRY_REDIRECT_DATA_DIR/cloud-ranges.txt
[[ -r $RANGES ]] || fail "cannot read $RANGES"
[[ -f Cargo.toml && -f benches/cloud-policy.toml ]] ||
    fail "run this script from the repository root (no benches/cloud-policy.toml in $PWD)"
((HIGH > LOW)) || fail "HIGH ($HIGH) must be larger than LOW ($LOW)"
for tool in cargo valgrind python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (Debian: apt-get install valgrind)"
done

TARGET_DIR=${CARGO_TARGET_DIR:-target}
readonly RR_BIN=$TARGET_DIR/release/registry-redirect
readonly CEILING_BIN=$TARGET_DIR/release/hyper-ceiling
readonly DECIDE_BIN=$TARGET_DIR/release/examples/decide_loop

WORK=$(mktemp -d -t registry-redirect-instructions.XXXXXX)
readonly WORK
SERVER_PID=

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "building release binaries into $TARGET_DIR" >&2
    cargo build --release --quiet -p registry-redirect-cli --bin registry-redirect
    cargo build --release --quiet -p registry-redirect-benches --bin hyper-ceiling --example decide_loop
fi
[[ -x $RR_BIN && -x $CEILING_BIN && -x $DECIDE_BIN ]] ||
    fail "missing $RR_BIN, $CEILING_BIN or $DECIDE_BIN (build them, or unset SKIP_BUILD)"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
readonly PORT
cp "$RANGES" "$WORK/cloud-ranges.txt"
{
    echo "listen = \"127.0.0.1:$PORT\""
    cat benches/cloud-policy.toml
} >"$WORK/registry-redirect.toml"

# Sends $1 keep-alive GET requests over CONNECTIONS connections and fails
# unless every response is a 3xx.
send_requests() {
    python3 - "$PORT" "$1" "$CONNECTIONS" "/v2/library/nginx/blobs/$DIGEST" <<'EOF'
import asyncio, sys

port, count, connections, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

async def connection(requests):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    failed = 0
    for _ in range(requests):
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        if not 300 <= int(head[0].split()[1]) < 400:
            failed += 1
        for line in head[1:]:
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
    writer.close()
    return failed

async def main():
    shares = [count // connections + (i < count % connections) for i in range(connections)]
    failed = sum(await asyncio.gather(*(connection(share) for share in shares)))
    if failed:
        sys.exit(f"{failed} of {count} responses were not redirects")

asyncio.run(main())
EOF
}

# Waits until the server accepts connections, or fails after the deadline.
wait_for_port() {
    python3 - "$PORT" "$START_DEADLINE_SECONDS" <<'EOF' || fail "nothing accepts connections on 127.0.0.1:$PORT"
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
}

# Prints the instructions that callgrind counted in its output file $1.
total_of() {
    awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

# Runs the server command "$@" under callgrind, sends $1 requests, stops
# it, and prints its total instruction count.
server_total() {
    local requests=$1 out=$WORK/callgrind.$RANDOM.out
    shift
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$WORK/valgrind.log" &
    SERVER_PID=$!
    wait_for_port
    send_requests "$requests"
    stop_server
    total_of "$out"
}

# Prints the instructions per request of the server command "$@".
per_request() {
    local low high
    low=$(server_total "$LOW" "$@")
    high=$(server_total "$HIGH" "$@")
    echo $(((high - low) / (HIGH - LOW)))
}

decide_total() {
    local out=$WORK/callgrind.decide.$1.out
    valgrind --tool=callgrind --callgrind-out-file="$out" "$DECIDE_BIN" aws "$1" >/dev/null 2>"$WORK/valgrind.log"
    total_of "$out"
}

echo "callgrind, $LOW and $HIGH requests over $CONNECTIONS connections, GET /v2/library/nginx/blobs/$DIGEST" >&2
rr=$(per_request "$RR_BIN" serve --config "$WORK/registry-redirect.toml" --workers 1 --log-level warn)
ceiling=$(per_request "$CEILING_BIN" --listen "127.0.0.1:$PORT")
decide_low=$(decide_total "$LOW")
decide_high=$(decide_total "$HIGH")
decide=$(((decide_high - decide_low) / (HIGH - LOW)))

echo "registry-redirect instructions/request: $rr"
echo "hyper-ceiling instructions/request: $ceiling"
echo "decide (blob, AWS client) instructions/decision: $decide"
