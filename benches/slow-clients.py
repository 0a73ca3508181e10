#!/usr/bin/env python3
"""Slow-client run of `registry-redirect serve` on loopback.

Run from the repository root:

    benches/slow-clients.py

The script starts the server on 127.0.0.1 with a short
`--header-read-timeout`, then opens SLOW_CONNECTIONS connections that each
send one byte of a request head about once a second and never finish it.
When the server closes one, its client reconnects and starts again, so the
server has that many unfinished requests open for the whole run. SILENT
connections connect and send nothing at all, and never reconnect.

Once every slow connection has sent its first byte, a normal client in a
separate process sends NORMAL_REQUESTS requests, each on a new connection,
and records their status and latency. The run ends when the normal client
is done and at least HEADER_TIMEOUT + 3 seconds have passed, so that every
slow connection reached the timeout at least once.

Settings (environment):
    SLOW_CONNECTIONS  trickling connections (default 1000)
    SILENT            connections that send nothing (default 100)
    NORMAL_REQUESTS   requests of the normal client (default 2000)
    NORMAL_INTERVAL_MS  pause between normal requests in milliseconds (default 5),
                      so that they span the moments when the server closes
                      the slow connections
    HEADER_TIMEOUT    the server's --header-read-timeout in seconds (default 5)
    RR_BIN            the server binary (default
                      ${CARGO_TARGET_DIR:-target}/release/registry-redirect,
                      built with cargo when missing)

Exits with 1 when a normal request failed or got no redirect. The whole run
is bounded by RUN_DEADLINE_SECONDS.
"""

import asyncio
import multiprocessing
import os
import queue
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SLOW_CONNECTIONS = int(os.environ.get("SLOW_CONNECTIONS", "1000"))
SILENT = int(os.environ.get("SILENT", "100"))
NORMAL_REQUESTS = int(os.environ.get("NORMAL_REQUESTS", "2000"))
NORMAL_INTERVAL_MS = float(os.environ.get("NORMAL_INTERVAL_MS", "5"))
HEADER_TIMEOUT = int(os.environ.get("HEADER_TIMEOUT", "5"))
RUN_DEADLINE_SECONDS = 55
START_DEADLINE_SECONDS = 10
# One request head, sent a byte at a time. The blank line that ends it is never sent.
SLOW_HEAD = b"GET /v2/pause/manifests/3.10 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow-client\r\n"
NORMAL_REQUEST = (
    b"GET /v2/pause/manifests/3.10 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
)
# Per-request bound for the normal client, so a stuck server fails the run
# instead of hanging it.
NORMAL_TIMEOUT_SECONDS = 10
POLICY = """\
default_upstream = "k8s"

[upstreams.k8s]
url = "https://registry.a.example"
"""


def fail(message):
    print(f"slow-clients.py: {message}", file=sys.stderr)
    sys.exit(1)


def raise_file_limit():
    """Raise the soft open-file limit so that every connection fits."""
    needed = SLOW_CONNECTIONS + SILENT + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        fail(f"the open-file limit is {soft} (hard {hard}), expected at least {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def server_binary():
    configured = os.environ.get("RR_BIN")
    if configured:
        return configured
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "registry-redirect")
    if not os.access(binary, os.X_OK):
        print(f"building {binary}", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "-p", "registry-redirect-cli"], check=True)
    return binary


def start_server(binary, work):
    config = os.path.join(work, "config.toml")
    with open(config, "w", encoding="utf-8") as file:
        file.write(POLICY)
    log = open(os.path.join(work, "server.log"), "wb")
    server = subprocess.Popen(
        [
            binary, "serve", "--config", config, "--listen", "127.0.0.1:0",
            "--header-read-timeout", str(HEADER_TIMEOUT),
            "--log-level", "warn",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        chunk = server.stdout.read(1)
        if not chunk:
            break
        line += chunk
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("listening on http://127."):
        server.kill()
        fail(f"the server printed {text!r}, expected 'listening on http://127...'")
    host, port = text.removeprefix("listening on http://").rsplit(":", 1)
    return server, (host, int(port))


def normal_client(address, count, results):
    """Send `count` requests, each on a new connection, and put (ok, seconds) pairs in `results`."""
    measured = []
    for _ in range(count):
        time.sleep(NORMAL_INTERVAL_MS / 1000)
        started = time.perf_counter()
        ok = False
        try:
            with socket.create_connection(address, timeout=NORMAL_TIMEOUT_SECONDS) as sock:
                sock.sendall(NORMAL_REQUEST)
                response = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    response += chunk
            ok = response.startswith(b"HTTP/1.1 307 ")
        except OSError:
            ok = False
        measured.append((ok, time.perf_counter() - started))
    results.put(measured)


class SlowStats:
    def __init__(self):
        self.opened = 0
        self.closed_by_server = 0
        self.connect_errors = 0
        # Seconds from the first byte to the server's close, per closed connection.
        self.lifetimes = []
        self.open_now = 0


async def wait_closed_by_server(reader):
    """Return when the server closes the connection (EOF or reset)."""
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass


async def slow_connection(address, stats, started_event, stop):
    first_round = True
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(*address)
        except OSError:
            stats.connect_errors += 1
            await asyncio.sleep(0.1)
            continue
        stats.opened += 1
        stats.open_now += 1
        closed = asyncio.ensure_future(wait_closed_by_server(reader))
        stopped = asyncio.ensure_future(stop.wait())
        first_byte_at = None
        try:
            for index in range(len(SLOW_HEAD)):
                if stop.is_set() or closed.done():
                    break
                writer.write(SLOW_HEAD[index:index + 1])
                try:
                    await writer.drain()
                except OSError:
                    break
                if first_byte_at is None:
                    first_byte_at = time.monotonic()
                    if first_round:
                        first_round = False
                        started_event()
                # Jitter spreads the bytes of 1,000 connections over the second.
                await asyncio.wait(
                    [closed, stopped],
                    timeout=random.uniform(0.9, 1.1),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if not stop.is_set():
                await asyncio.wait([closed, stopped], return_when=asyncio.FIRST_COMPLETED)
            if closed.done() and not stop.is_set():
                stats.closed_by_server += 1
                if first_byte_at is not None:
                    stats.lifetimes.append(time.monotonic() - first_byte_at)
        finally:
            stats.open_now -= 1
            closed.cancel()
            stopped.cancel()
            writer.close()


async def silent_connection(address, outcome, stop):
    """Connect, send nothing, and record whether the server closes it before `stop`."""
    reader, writer = await asyncio.open_connection(*address)
    opened_at = time.monotonic()
    closed = asyncio.ensure_future(wait_closed_by_server(reader))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([closed, stopped], return_when=asyncio.FIRST_COMPLETED)
    if closed.done():
        outcome.append(time.monotonic() - opened_at)
    closed.cancel()
    stopped.cancel()
    writer.close()


def percentile(sorted_values, fraction):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(address):
    stats = SlowStats()
    stop = asyncio.Event()
    started_count = 0
    all_started = asyncio.Event()

    def slow_started():
        nonlocal started_count
        started_count += 1
        if started_count == SLOW_CONNECTIONS:
            all_started.set()

    run_started = time.monotonic()
    silent_closed = []
    tasks = [asyncio.ensure_future(silent_connection(address, silent_closed, stop)) for _ in range(SILENT)]
    tasks += [
        asyncio.ensure_future(slow_connection(address, stats, slow_started, stop))
        for _ in range(SLOW_CONNECTIONS)
    ]
    try:
        await asyncio.wait_for(all_started.wait(), timeout=15)
    except asyncio.TimeoutError:
        stop.set()
        fail(f"only {started_count} of {SLOW_CONNECTIONS} slow connections sent a byte within 15 s")
    print(
        f"{SLOW_CONNECTIONS} slow and {SILENT} silent connections open after "
        f"{time.monotonic() - run_started:.1f} s; starting the normal client",
        file=sys.stderr,
    )

    # The normal client runs in its own process, so that this event loop
    # does not share an interpreter lock with it and inflate its latency.
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    client = context.Process(target=normal_client, args=(address, NORMAL_REQUESTS, results))
    normal_started = time.monotonic()
    client.start()
    open_during_normal = [stats.open_now]
    measured = None
    while measured is None:
        if time.monotonic() - run_started > RUN_DEADLINE_SECONDS:
            client.kill()
            stop.set()
            fail(f"the normal client did not finish within {RUN_DEADLINE_SECONDS} s")
        try:
            measured = results.get_nowait()
        except queue.Empty:
            open_during_normal.append(stats.open_now)
            await asyncio.sleep(0.1)
    normal_seconds = time.monotonic() - normal_started
    client.join()

    minimum_end = run_started + HEADER_TIMEOUT + 3
    while time.monotonic() < minimum_end:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats, measured, normal_seconds, open_during_normal, silent_closed, time.monotonic() - run_started


def main():
    if not (os.path.isfile("Cargo.toml") and os.path.isdir("benches")):
        fail(f"run this script from the repository root (no Cargo.toml and benches/ in {os.getcwd()})")
    file_limit = raise_file_limit()
    binary = server_binary()
    with tempfile.TemporaryDirectory(prefix="registry-redirect-slow.") as work:
        server, address = start_server(binary, work)
        try:
            outcome = asyncio.run(run(address))
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        stats, measured, normal_seconds, open_during_normal, silent_closed, run_seconds = outcome

    succeeded = sum(1 for ok, _ in measured if ok)
    latencies = sorted(seconds * 1000 for _, seconds in measured)
    lifetimes = sorted(stats.lifetimes)
    print(f"open_file_limit={file_limit}")
    print(f"header_read_timeout_s={HEADER_TIMEOUT}")
    print(f"run_s={run_seconds:.1f}")
    print(f"slow_connections={SLOW_CONNECTIONS}")
    print(f"slow_connections_open_during_normal_min={min(open_during_normal)}")
    print(f"slow_connections_opened_total={stats.opened}")
    print(f"slow_connections_closed_by_server={stats.closed_by_server}")
    print(f"slow_connect_errors={stats.connect_errors}")
    if lifetimes:
        print(
            f"slow_first_byte_to_close_s min={lifetimes[0]:.2f} "
            f"p50={statistics.median(lifetimes):.2f} max={lifetimes[-1]:.2f}"
        )
    print(f"silent_connections={SILENT} closed_by_server={len(silent_closed)}")
    if silent_closed:
        print(f"silent_open_to_close_s min={min(silent_closed):.2f} max={max(silent_closed):.2f}")
    print(f"normal_requests={len(measured)} succeeded={succeeded} in {normal_seconds:.1f} s")
    print(
        f"normal_latency_ms p50={percentile(latencies, 0.50):.2f} "
        f"p99={percentile(latencies, 0.99):.2f} max={latencies[-1]:.2f}"
    )
    if succeeded != len(measured):
        fail(f"{len(measured) - succeeded} of {len(measured)} normal requests got no 307")


if __name__ == "__main__":
    main()
