"""Many connections from one asyncio process: thousands of edits in flight at once, and slow or idle
clients (slowloris) that hold connections open without finishing a request. Loopback only, bounded.

Each function runs `asyncio.run` itself, so it can be submitted to a `load_process()` pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from typing import Any

from bench.common import API_KEY


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _request(path: str, body: bytes, content_type: str, authorization: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Authorization: {authorization}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def _held(port: int, request: bytes, count: int, timeout: float, connect_timeout: float) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    errors: list[str] = []
    latencies: list[float] = []

    async def one() -> None:
        began = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), connect_timeout)
        except (TimeoutError, OSError) as exc:
            errors.append(f"connect: {type(exc).__name__}")
            return
        try:
            writer.write(request)
            await writer.drain()
            status, payload = await asyncio.wait_for(_read_answer(reader), timeout)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - began)
            else:
                errors.append(f"HTTP {status}: {payload[:160]!r}")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:160])
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    latencies.sort()
    return {
        "sent": count,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": list(dict.fromkeys(errors))[:5],
        "statuses": statuses,
        "p50_s": round(latencies[len(latencies) // 2], 2) if latencies else None,
        "max_s": round(latencies[-1], 2) if latencies else None,
        "wall_s": round(time.perf_counter() - began, 2),
    }


def held_edits(
    port: int, path: str, body: bytes, content_type: str, count: int, timeout: float = 120.0,
    authorization: str = f"Bearer {API_KEY}",
) -> dict[str, Any]:  # fmt: skip
    """`count` POSTs sent at once, one connection each; waits for every answer (or `timeout`)."""
    _raise_fd_limit(count + 256)
    return asyncio.run(_held(port, _request(path, body, content_type, authorization), count, timeout, 30.0))


async def _slow(port: int, idle: int, slow: int, hold_s: float, drip_s: float) -> dict[str, Any]:
    opened = 0
    closed_by_server = 0
    answered: dict[str, int] = {}
    first_closed_after: list[float] = []
    began = time.monotonic()
    stop_at = began + hold_s

    async def keep(dripping: bool) -> None:
        nonlocal opened, closed_by_server
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (TimeoutError, OSError):
            return
        opened += 1
        try:
            if dripping:  # a request line, then one header byte every drip_s, never the blank line
                writer.write(b"POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            while time.monotonic() < stop_at:
                if dripping:
                    writer.write(b"a")
                    await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(4096), min(drip_s, max(0.01, stop_at - time.monotonic())))
                except TimeoutError:
                    continue
                if data[:9].startswith(b"HTTP/1."):
                    code = data[9:12].decode("latin-1")
                    answered[code] = answered.get(code, 0) + 1
                if not data or data.startswith(b"HTTP/1."):
                    closed_by_server += 1
                    first_closed_after.append(time.monotonic() - began)
                    return
        except OSError:
            closed_by_server += 1
            first_closed_after.append(time.monotonic() - began)
        finally:
            writer.close()

    tasks = [keep(dripping=False) for _ in range(idle)] + [keep(dripping=True) for _ in range(slow)]
    await asyncio.gather(*tasks)
    first_closed_after.sort()
    return {
        "attempted": idle + slow,
        "opened": opened,
        "closed_by_server": closed_by_server,
        "answers_to_slow_clients": answered,
        "median_close_s": round(first_closed_after[len(first_closed_after) // 2], 1) if first_closed_after else None,
    }


def slow_clients(port: int, idle: int, slow: int, hold_s: float, drip_s: float = 2.0) -> dict[str, Any]:
    """Opens `idle` connections that send nothing and `slow` ones that trickle an endless header,
    keeps them `hold_s` seconds (or until the server closes them); counts what the server did."""
    _raise_fd_limit(idle + slow + 256)
    return asyncio.run(_slow(port, idle, slow, hold_s, drip_s))
