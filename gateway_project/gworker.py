"""gunicorn's threaded worker, hardened against slow and idle clients.

gunicorn's gthread worker hands each new connection to a thread, which then blocks until the whole
request head has arrived: a few hundred clients that connect and send nothing, or trickle their
headers a byte at a time (slowloris), take every thread and the gateway stops answering. Here:

- the request head is read by the worker's main loop, without a thread, and must be complete
  within GUNICORN_HEADER_TIMEOUT seconds of the connection being accepted (or of its previous
  answer, on a kept-alive connection); otherwise the connection is answered 408 and closed;
- a thread is taken only once the head is complete; while it reads the body, a client that sends
  nothing for GUNICORN_BODY_TIMEOUT seconds is cut off (the read raises `TimeoutError`, which
  edits_api.uploads turns into a 408);
- after an answer on a kept-alive connection, its thread waits GUNICORN_KEEPALIVE_LINGER (10 ms)
  for the next head, giving its CPU turn back; what has not come by then is waited for by the main
  loop, the bytes of a head begun meanwhile kept and its header timeout running from then;
- past `worker_connections` open connections in this process (GUNICORN_WORKER_CONNECTIONS), a new
  connection is answered 503 with Retry-After and closed at once, instead of waiting unseen in the
  listen backlog as with gunicorn's own worker;
- a thread runs a request only while it holds a CPU turn of the request's lane (Host and path, read
  from the head), and gives it back whenever it waits on the client's socket (edits_api/turns.py):
  512 edits arriving at once on one route no longer keep the main loop and other routes from the
  interpreter (a fast route's p99 was 1.7 s, its first requests waiting behind the crowd); requests
  waiting for a thread are taken lane by lane too (LanePool).

Everything else (HTTP parsing, keep-alive, the WSGI call) is gunicorn's own (pinned version).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from gunicorn.http.body import MAX_READ_STEP, Body
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from edits_api import turns

# The end of a request head, and a bound on its size (gunicorn's own limits then apply).
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024
_ACCEPT_BATCH = 256
# Heads are read this much at a time: a head is rarely longer, and a 64 KiB read brought the body's
# first 64 KiB along, copied several times through gunicorn's parser and body reader (CPU per
# 100 KB edit at c=16, two runs each: 1.17-1.19 ms with 64 KiB reads, 1.07-1.11 ms with these).
_HEAD_READ = 8192
_ENVELOPE = b'{"error": {"message": "%s", "type": "server_error", "param": null, "code": "%s"}}'


def _setting(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {raw!r}")
    return value


def _answer(status: str, message: str, code: str, extra: str = "") -> bytes:
    body = _ENVELOPE % (message.encode(), code.encode())
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _send_and_close(sock: socket.socket, data: bytes) -> None:
    """Best effort, never blocking the main loop: the client may not be reading."""
    try:
        sock.setblocking(False)
        sock.send(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.close()


def _lane(head: bytes) -> str:
    """Host and path of a request head: requests of one route share their turns."""
    first, _, rest = head.partition(b"\r\n")
    parts = first.split(b" ")
    path = parts[1].partition(b"?")[0] if len(parts) > 1 else b""
    host = b""
    for line in rest.split(b"\r\n"):
        if line[:5].lower() == b"host:":
            host = line[5:].strip()
            break
    return (host + path).decode("latin-1")


class TurnTakingSocket(socket.socket):
    """A client socket whose reads, and writes that must wait, give the thread's CPU turn back
    meanwhile (a slow client must not hold one). Even reads of data already there do: keeping the
    turn through them made longer turns, and the main loop, which holds none, waited longer for the
    interpreter (fast route p99 beside 512 held edits: 292 and 293 ms, against 79 ms)."""

    def recv(self, *args: Any) -> bytes:
        with turns.waiting():
            return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        with turns.waiting():
            return super().recv_into(*args)

    def sendall(self, data: Any, flags: int = 0) -> None:
        # An answer usually fits the socket's send buffer: it goes out at once, and the turn is kept
        # (gunicorn writes the head and the body apart, and each hand-back queued the request for a
        # turn again behind other requests). Only what must wait for the client gives it back.
        sent = 0
        if self.gettimeout() is not None and not flags:
            # With a timeout the descriptor is non-blocking (Python emulates the timeout with poll,
            # which send() would call first, and wait in, holding the turn): a write takes what
            # fits now and never waits.
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sent = os.write(self.fileno(), data)
        if sent < len(data):
            with turns.waiting(), memoryview(data) as view:
                super().sendall(view[sent:], flags)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        # A file answer (a stored image) waits for the client between pieces: turn given back.
        with turns.waiting():
            return super().sendfile(file, offset, count)


class BufferedSocketUnreader(SocketUnreader):
    """gunicorn's SocketUnreader with a buffer that is not copied whole on every read.

    gunicorn keeps read-ahead in a BytesIO and, for each read of a body, copies all of it twice
    (getvalue, then the rest into a new BytesIO): with up to 1 MiB read ahead and Django reading
    64 KiB at a time, a 100 MB upload cost 8 times as long through the gateway as to the provider.
    Here the bytes stay in one bytearray with a read offset; each byte is copied once on its way out.
    """

    def __init__(self, sock: socket.socket, max_chunk: int = 8192) -> None:
        self._data = bytearray()
        self._pos = 0
        super().__init__(sock, max_chunk)

    @property
    def buf(self) -> io.BytesIO:
        """What is buffered and unread, as gunicorn's own code looks at it (a copy)."""
        copy = io.BytesIO()
        copy.write(self._data[self._pos :])
        return copy

    @buf.setter
    def buf(self, value: io.BytesIO) -> None:
        self._data, self._pos = bytearray(value.getvalue()), 0

    def buffered(self) -> int:
        return len(self._data) - self._pos

    def _take(self, size: int) -> bytes:
        with memoryview(self._data) as view:
            out = bytes(view[self._pos : self._pos + size])
        self._pos += len(out)
        if self._pos == len(self._data):
            self._data, self._pos = bytearray(), 0
        return out

    def read(self, size: int | None = None, read_ahead: int | None = None) -> bytes:
        if size is not None and not isinstance(size, int):
            raise TypeError("size parameter must be an int or long.")
        if size == 0:
            return b""
        if size is None or size < 0:
            return self._take(self.buffered()) if self.buffered() else self.chunk(read_ahead)
        if self.buffered():
            pieces = [self._take(min(size, self.buffered()))]
            got = len(pieces[0])
        else:
            pieces, got = [], 0
        # Never fewer than `size` unless the peer is done: gunicorn's LengthReader counts `size` as
        # read, and a short read cut the body short. The pieces are joined once (one copy).
        # Small reads read ahead up to 64 KiB; large ones ask for exactly what is missing, so
        # the joined bytes are the answer and need no second copy.
        wanted = max(size, min(read_ahead or 0, 64 * 1024))
        while got < size:
            chunk = self.chunk(wanted - got)
            if not chunk:
                break
            pieces.append(chunk)
            got += len(chunk)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if len(data) > size:  # read ahead: the rest stays buffered
            self._data, self._pos = bytearray(memoryview(data)[size:]), 0
            return data[:size]
        return data

    def unread(self, data: bytes) -> None:
        self._data, self._pos = bytearray(data) + self._data[self._pos :], 0

    def take_buffered(self) -> bytes:
        return self._take(self.buffered())


class UnbufferedBody(Body):
    """gunicorn's request body, without its buffer when it holds nothing: every read went through
    a BytesIO (a write, then a copy out), a tenth of a 100 MB upload's time. The readers below it
    return the size asked for, so a read is handed over as it came."""

    def read(self, size: int | None = None) -> bytes:
        wanted = self.getsize(size)
        if self.buf.tell() or not 0 < wanted <= MAX_READ_STEP:
            return bytes(super().read(size))
        data = bytes(self._read_reader(wanted))
        if data and len(data) < wanted:  # a chunked body may give less: the rest as gunicorn reads it
            data += super().read(wanted - len(data))
        return data


class LaneQueue:
    """The thread pool's queue of requests, served lane by lane in rotation as CPU turns are:
    with 256 edits of one route queued for threads, a request of another route waited until all
    of them were picked up (a fast route's first requests: 120-290 ms while 512 edits arrived)."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._lanes: turns.Lanes[Any] = turns.Lanes()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        args = getattr(item, "args", ())  # a concurrent.futures work item, or None to stop a thread
        with self._ready:
            self._lanes.push(getattr(args[0], "lane", "") if args else "", item)
            self._ready.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self._ready:
            while not self._lanes:
                if not block or not self._ready.wait(timeout):
                    raise queue.Empty
            return self._lanes.pop()

    def get_nowait(self) -> Any:
        return self.get(block=False)


class LanePool(ThreadPoolExecutor):
    """The standard thread pool, taking its requests from a LaneQueue."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        # The executor reads its queue through this private attribute only (put, get, get_nowait),
        # and no thread has started yet to hold the old one. The stubs type it as SimpleQueue, which
        # LaneQueue is not (it orders by lane): hence the one ignore, for that declared type only.
        self._work_queue = LaneQueue()  # type: ignore[assignment]


class GatewayThreadWorker(ThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = _setting("GUNICORN_HEADER_TIMEOUT", 10.0)
        self.body_timeout = _setting("GUNICORN_BODY_TIMEOUT", 30.0)
        # 10 ms, not 2: at c=16 on two cores a client's next request often comes after 2 ms, and each
        # round through the main loop cost 5-7% more CPU per edit (bench/README.md, session 15).
        self.keepalive_linger = _setting("GUNICORN_KEEPALIVE_LINGER", 0.010)
        # gunicorn stops accepting at worker_connections (the rest wait unseen in the backlog);
        # this worker keeps accepting and refuses past that many itself.
        self.max_connections = self.cfg.worker_connections
        self.worker_connections = self.max_connections + 1
        self.max_keepalived = self.max_connections
        # Connections whose head is still arriving, oldest first: conn -> (deadline, bytes so far).
        self.reading: OrderedDict[TConn, tuple[float, bytes]] = OrderedDict()
        self.busy_answer = _answer(
            "503 Service Unavailable", "The gateway is at its connection limit; retry shortly.",
            "server_busy", "Retry-After: 1\r\n",
        )  # fmt: skip
        self.timeout_answer = _answer(
            "408 Request Timeout", "The request head did not arrive in time.", "request_timeout"
        )

    # -- accepting and reading heads in the main loop -----------------------------------------

    def accept(self, listener: socket.socket) -> None:
        # Every waiting connection (up to a bound), not one per loop turn: under load each turn of
        # this loop waits for the interpreter, and 512 connections took 512 turns (1.6 s).
        for _ in range(_ACCEPT_BATCH):
            try:
                client_sock, client_addr = listener.accept()
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return
            self._take(listener, client_sock, client_addr)

    def _take(self, listener: socket.socket, client_sock: socket.socket, client_addr: Any) -> None:
        if self.nr_conns >= self.max_connections:
            _send_and_close(client_sock, self.busy_answer)
            return
        self.nr_conns += 1
        if self.cfg.is_ssl:  # the TLS handshake needs a thread; keep gunicorn's own path
            client_sock.setblocking(True)
            self.enqueue_req(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))
            return
        client_sock = TurnTakingSocket(
            client_sock.family, client_sock.type, client_sock.proto, fileno=client_sock.detach()
        )
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._read_head(conn)

    def _read_head(self, conn: TConn) -> None:
        """Wait, without a thread, for this connection's next request head."""
        if conn.sock.gettimeout() != 0.0:
            conn.sock.setblocking(False)
        begun, conn.partial = getattr(conn, "partial", b""), b""
        self.reading[conn] = (time.monotonic() + self.header_timeout, begun)
        # A kept-alive connection is here because it spoke, and under load a new one has often sent
        # its head by the time it is accepted: read it now, without a round through the poller.
        self._on_head_data(conn, None)
        if conn in self.reading:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_data, conn))

    def _on_head_data(self, conn: TConn, _sock: Any) -> None:
        deadline, buffer = self.reading[conn]
        try:
            data = conn.sock.recv(_HEAD_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._stop_reading(conn)
            self.nr_conns -= 1
            conn.close()
            return
        buffer = buffer + data if buffer else data  # most heads come in one piece: no copy
        end = buffer.find(_HEAD_END)
        if end < 0 and len(buffer) < _MAX_HEAD:
            self.reading[conn] = (deadline, buffer)
            return
        self._stop_reading(conn)
        conn.head = buffer  # the thread hands it to gunicorn's parser (handle)
        conn.data_ready = True
        conn.lane = _lane(buffer[:end])
        self.enqueue_req(conn)

    def _stop_reading(self, conn: TConn) -> None:
        self.reading.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):  # KeyError: never registered
            self.poller.unregister(conn.sock)

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        """A kept-alive connection speaks again: its next head is read like a new one's."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_head(conn)

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        self._murder_slow_heads(force)

    def _murder_slow_heads(self, force: bool = False) -> None:
        now = time.monotonic()
        while self.reading:
            conn, (deadline, buffer) = next(iter(self.reading.items()))
            if deadline > now and not force:
                break
            if not force:
                # A head that came while this loop was busy (a starved main thread) still counts.
                self._on_head_data(conn, None)
                if conn not in self.reading:
                    continue
            self._stop_reading(conn)
            self.nr_conns -= 1
            # Nothing sent at all: an idle connection, closed quietly; a partial head gets its 408.
            _send_and_close(conn.sock, self.timeout_answer if buffer else b"")

    # -- the body: a thread per request, bounded waits -----------------------------------------

    def get_thread_pool(self) -> Any:
        """gunicorn's pool, taking requests lane by lane (LanePool), with GUNICORN_THREADS_READY
        threads started now: the pool starts a thread inside the main loop's submit, and under a
        burst each start waited for the interpreter (512 edits at once: 0.45 s more before a new
        connection was even read)."""
        pool = LanePool(self.cfg.threads)
        ready = min(int(_setting("GUNICORN_THREADS_READY", 256)), self.cfg.threads)
        started = threading.Barrier(ready + 1)
        for _ in range(ready):
            pool.submit(started.wait)  # each waits, so every submit starts one more thread
        started.wait()
        return pool

    def handle(self, conn: TConn) -> Any:
        result = self._handle_one(conn)
        # The next request on a kept-alive connection often follows at once (a balancer's pooled
        # connection, a client's next call): waited for here a moment, it skips the main loop's
        # round (hand back, register, poll, unregister, queue for a thread).
        while result is True and self.alive and self._next_head(conn):
            result = self._handle_one(conn)
        return result

    def _handle_one(self, conn: TConn) -> Any:
        with turns.turn(getattr(conn, "lane", "")):
            head = getattr(conn, "head", None)
            if head is not None:  # read ahead; gunicorn's parser is made here, not in the main loop
                conn.head = None
                conn.sock.setblocking(True)
                conn.init()
                if not isinstance(conn.parser.unreader, BufferedSocketUnreader):
                    conn.parser.unreader = BufferedSocketUnreader(conn.sock)
                conn.parser.unreader.unread(head)
            return super().handle(conn)

    def _next_head(self, conn: TConn) -> bool:
        """Whether the connection's next request head came within GUNICORN_KEEPALIVE_LINGER; the
        bytes of a head begun meanwhile go on to the main loop (`partial`)."""
        unreader = conn.parser.unreader
        if not isinstance(unreader, BufferedSocketUnreader) or unreader.buffered():
            return False  # bytes already read ahead: gunicorn's own path serves them
        deadline = time.monotonic() + self.keepalive_linger
        buffer = b""
        try:
            while (left := deadline - time.monotonic()) > 0:
                conn.sock.settimeout(left)
                data = conn.sock.recv(_HEAD_READ)  # no CPU turn is held while it waits
                if not data:
                    break
                buffer += data
                end = buffer.find(_HEAD_END)
                if end >= 0 or len(buffer) >= _MAX_HEAD:
                    conn.head, conn.lane = buffer, _lane(buffer[:end])
                    return True
        except OSError:  # TimeoutError included: nothing more came
            pass
        conn.partial = buffer
        return False

    def finish_request(self, conn: TConn, fs: Any) -> None:
        if getattr(conn, "partial", b"") and self.alive and not fs.cancelled() and fs.exception() is None:
            self._read_head(conn)  # a head begun during the linger: its header timeout runs from now
            return
        super().finish_request(conn, fs)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        # Every wait for the client from here on (body reads, answer writes) is bounded.
        conn.sock.settimeout(self.body_timeout)
        if type(req.body) is Body:  # nothing read from it yet: the same reader, without the copy
            req.body = UnbufferedBody(req.body.reader)
        return super().handle_request(req, conn)
