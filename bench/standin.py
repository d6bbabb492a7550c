"""A lean stand-in for OpenAI's images API, for benchmarks: one asyncio process that reads and
discards each request body and answers at once (or after `--hold` seconds) with a fixed small
PNG as b64_json. Every answer is one pre-rendered buffer sent in one write, with TCP_NODELAY.

    python -m bench.standin [--port 0] [--hold SECONDS] [--answer-kb KB]   # prints "PORT <n>" once listening

`--answer-kb`: the answer's PNG carries that many KB of random bytes in a private ancillary chunk
(a valid PNG any reader skips through), as a real image's b64_json is megabytes.

`GET /stats` answers {"requests", "body_bytes", "max_in_flight"}: API calls since start (the peak
since the last `POST /stats/reset`).
tests/standin.py is the full-featured one (fault modes, recording); it is a threaded server that
parses every multipart body, so it would measure itself as much as the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import struct
import time
import zlib

_READ_CHUNK = 1024 * 1024


def tiny_png(padding: int = 0) -> bytes:
    """An 8x8 opaque RGB PNG, built by hand so the stand-in imports nothing heavy; `padding` random
    bytes in a private chunk (`prVt`: ancillary, private, safe to copy) make it that much larger."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x1e\x78\xc8" * 8 for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    extra = chunk(b"prVt", os.urandom(padding)) if padding else b""
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class StandIn:
    def __init__(self, hold: float, answer_kb: int = 0) -> None:
        self.hold = hold
        self.requests = 0
        self.body_bytes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        answer = {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(tiny_png(answer_kb * 1000)).decode()}],
            "background": "opaque",
            "output_format": "png",
            "size": "1024x1024",
            "quality": "medium",
            # OpenAI's full usage shape (LiteLLM refuses an answer without input_tokens_details).
            "usage": {
                "input_tokens": 50,
                "output_tokens": 50,
                "total_tokens": 100,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            },
        }
        self.ok = _response("200 OK", json.dumps(answer).encode())
        error = {"error": {"message": "No such route", "type": "invalid_request_error", "param": None, "code": None}}
        self.not_found = _response("404 Not Found", json.dumps(error).encode())

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serves one request; False when the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        received = await self._discard_body(reader, headers)
        if method == "GET" and path == "/stats":
            stats = json.dumps(
                {"requests": self.requests, "body_bytes": self.body_bytes, "max_in_flight": self.max_in_flight}
            ).encode()
            writer.write(_response("200 OK", stats))
        elif method == "POST" and path == "/stats/reset":  # a new phase: its own peak, not the run's
            self.max_in_flight = self.in_flight
            writer.write(_response("200 OK", b"{}"))
        elif method == "POST" and path.endswith(("/images/edits", "/images/generations")):
            self.requests += 1
            self.body_bytes += received
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.hold:
                    await asyncio.sleep(self.hold)
                writer.write(self.ok)
            finally:
                self.in_flight -= 1
        else:
            writer.write(self.not_found)
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    async def _discard_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            total = 0
            while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
                await reader.readexactly(size + 2)
                total += size
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            return total
        remaining = int(headers.get("content-length") or 0)
        total = remaining
        while remaining:
            chunk = await reader.read(min(remaining, _READ_CHUNK))
            if not chunk:
                raise ConnectionError("client went away mid-body")
            remaining -= len(chunk)
        return total


async def main(port: int, hold: float, answer_kb: int) -> None:
    standin = StandIn(hold, answer_kb)
    server = await asyncio.start_server(standin.serve, "127.0.0.1", port, backlog=4096, limit=256 * 1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to hold each answer")
    parser.add_argument("--answer-kb", type=int, default=0, help="KB of padding in the answer's PNG")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.hold, args.answer_kb))
