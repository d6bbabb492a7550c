"""How fast any proxy can pass a 100 MB edit on this machine: the direct call, four bare proxies
(a raw socket and a thread per connection, no HTTP library, no checks) and the gateway, taking
turns on the same body and stand-in, so that the upload goal (<= 2x the direct call) can be judged
against what moving the bytes itself costs here.

    .venv/bin/python -m bench.upload_floor [--mb 100] [--rounds 7]

The proxies, each in its own process:
- `stream`: passes the body on as it arrives (recv, sendall); no parsing, no copy kept.
- `stream+parse`: the same, with the `multipart` package's parser run over every chunk, as a proxy
  that must find the file part to check it has to.
- `stream+parse+spool`: the same, with the file part also written to a temporary file, as a proxy
  that can retry or fall back (the body is gone from the socket once read) has to.
- `spool+sendfile`: receives the whole body into a temporary file, then sends it with sendfile;
  the gateway's design (it checks the whole request before the first byte goes to a provider).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading

from bench.common import (
    Row,
    StandInProcess,
    edit_body,
    entities,
    gateway,
    image_model_entity,
    log,
    noise_png,
    report,
    route_entity,
)
from bench.upload import MODEL, post

PROXIES = ("stream", "stream+parse", "stream+parse+spool", "spool+sendfile")
CHUNK = 1024 * 1024


def _head(conn: socket.socket) -> tuple[bytes, bytes, int, bytes]:
    """The request head as received, the body bytes read with it, the Content-Length, the boundary."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if not (more := conn.recv(65536)):
            raise ConnectionError("client went away in the head")
        buffer += more
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length, boundary = 0, b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"content-type":
            boundary = value.split(b"boundary=")[-1].strip().strip(b'"')
    return head + b"\r\n\r\n", rest, length, boundary


def _relay(mode: str, conn: socket.socket, upstream_port: int) -> None:
    with conn:  # closed on any failure too, so that the benchmark's client is not left waiting
        _pass_on(mode, conn, upstream_port)


def _pass_on(mode: str, conn: socket.socket, upstream_port: int) -> None:
    from multipart import PushMultipartParser  # the child's import, not the benchmark's

    head, rest, length, boundary = _head(conn)
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    remaining = length - len(rest)
    if mode == "spool+sendfile":
        with tempfile.TemporaryFile() as spool:
            spool.write(rest)
            while remaining:
                chunk = conn.recv(min(remaining, CHUNK))
                spool.write(chunk)
                remaining -= len(chunk)
            spool.flush()
            upstream.sendall(head)
            sent = 0
            while sent < length:
                sent += os.sendfile(upstream.fileno(), spool.fileno(), sent, length - sent)
    else:
        parser = PushMultipartParser(boundary, content_length=length) if "parse" in mode else None
        with contextlib.ExitStack() as stack:
            spool = stack.enter_context(tempfile.TemporaryFile()) if "spool" in mode else None
            upstream.sendall(head)
            chunk = rest
            while True:
                if parser is not None:
                    for event in parser.parse(chunk):
                        if spool is not None and isinstance(event, bytes):
                            spool.write(event)
                upstream.sendall(chunk)
                if not remaining:
                    break
                if not (chunk := conn.recv(min(remaining, CHUNK))):  # bytes: what the parser takes
                    raise ConnectionError("client went away mid-body")
                remaining -= len(chunk)
    conn.sendall(upstream.recv(CHUNK))  # the stand-in's small answer, in one piece
    upstream.close()


def serve_proxy(mode: str, upstream_port: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_relay, args=(mode, conn, upstream_port), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100, help="the PNG's size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=7, help="turns of every path; medians compared")
    parser.add_argument("--proxy", nargs=2, metavar=("MODE", "UPSTREAM_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        serve_proxy(args.proxy[0], int(args.proxy[1]))
        return

    log(f"generating a {args.mb:g} MB noise PNG")
    body, content_type = edit_body(noise_png(int(args.mb * 1_000_000)), model=MODEL)
    small = edit_body(noise_png(10_000), model=MODEL)
    times: dict[str, list[float]] = {"direct": [], **{mode: [] for mode in PROXIES}, "gateway": []}
    statuses: dict[str, set[int]] = {name: set() for name in times}
    proxies: list[subprocess.Popen[str]] = []
    with StandInProcess() as standin:
        seed = entities([image_model_entity("bench-ct", standin.openai_url, "cloud-temple", MODEL)], [
            route_entity("bench-upload", ["127.0.0.1"], ["bench-ct"], max_size_upload=200 * 2**20)
        ])  # fmt: skip
        try:
            ports = {"direct": standin.port}
            for mode in PROXIES:
                command = [sys.executable, "-m", "bench.upload_floor", "--proxy", mode, str(standin.port)]
                proxies.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
                assert proxies[-1].stdout is not None
                ports[mode] = int(proxies[-1].stdout.readline().split()[1])
            with gateway(seed) as gw:
                ports["gateway"] = gw.port
                for _ in range(20):  # lazy imports and first allocations are not the upload's
                    post(gw.port, *small)
                for turn in range(args.rounds):
                    log(f"round {turn + 1} of {args.rounds}")
                    for name, port in ports.items():
                        status, took, _ = post(port, body, content_type)
                        times[name].append(took)
                        statuses[name].add(status)
        finally:
            for proc in proxies:
                proc.kill()
                proc.wait()
    report(f"{args.mb:g} MB upload: the direct call, bare proxies and the gateway", rows(times, statuses), {
        "body_mb": round(len(body) / 1e6, 1), "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "statuses": {k: sorted(v) for k, v in statuses.items()},
    })  # fmt: skip


def rows(times: dict[str, list[float]], statuses: dict[str, set[int]]) -> list[Row]:
    direct = statistics.median(times["direct"])
    out = []
    for name, samples in times.items():
        median = statistics.median(samples)
        ratio = median / direct
        value = f"{median * 1000:.0f} ms ({min(samples) * 1000:.0f}-{max(samples) * 1000:.0f}), {ratio:.2f}x"
        ok = statuses[name] == {200} and (ratio <= 2 if name != "direct" else True)
        out.append(Row(f"{name}: median time, range, / direct", value, "<= 2x" if name != "direct" else "", ok))
    return out


if __name__ == "__main__":
    main()
