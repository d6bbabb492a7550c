"""CPU turns: how many requests of one process run Python at once, shared fairly by route.

A worker serves hundreds of edits with threads, and Python runs one thread at a time. When 512
edits arrived at once on one route, every other request waited behind all of them each time it
gave up the interpreter (a fast route's p99: 1.2-1.7 s). Under gunicorn (gateway_project/gworker.py)
a request runs only while it holds one of TURNS_PER_PROCESS turns, and gives it back whenever it
waits (`waiting()`): for the client's socket, a provider, Redis, the image storage, a retry's
backoff or another request's answer (not for a database query: it may hold a lock or a pooled
connection another request waits for). Waiting requests get turns lane by lane (a lane is a
request's Host and path, so a route) in rotation: a request on a quiet route waits for a few
turns, not for a crowd. No request waits more than MAX_WAIT_S for a turn. Elsewhere (other
servers, tests' live server) nothing takes a turn and `waiting()` does nothing. For the waits of
seconds (a provider, a backoff, another request's answer), `waiting_long()` also hands the pooled
database connection back, under any server."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, ParamSpec, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# The longest a request waits for a turn before it runs without one: a thread that waits on
# something other requests hold (a pooled database connection, a lock) while holding a turn must
# not stop them for longer.
MAX_WAIT_S = 2.0


class Lanes(Generic[T]):
    """Items queued per lane, taken lane by lane in rotation: a lane's next item comes after the
    other lanes' (a request of a quiet route waits for one of a crowd's, not for all of them)."""

    def __init__(self) -> None:
        self._lanes: OrderedDict[str, deque[T]] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._lanes)

    def push(self, lane: str, item: T) -> None:
        self._lanes.setdefault(lane, deque()).append(item)

    def pop(self) -> T:
        lane, items = next(iter(self._lanes.items()))
        item = items.popleft()
        if items:
            self._lanes.move_to_end(lane)
        else:
            del self._lanes[lane]
        return item

    def remove(self, lane: str, item: T) -> bool:
        """Takes `item` out of its queue; False when it is no longer queued (popped meanwhile)."""
        items = self._lanes.get(lane)
        if items is None or item not in items:
            return False
        items.remove(item)
        if not items:
            del self._lanes[lane]
        return True


class FairTurns:
    """`slots` turns; waiters queue per lane (a route) and lanes take turns in rotation."""

    def __init__(self, slots: int) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: Lanes[threading.Lock] = Lanes()

    def acquire(self, lane: str, timeout: float) -> bool:
        """True with a turn; False when none came within `timeout` (the caller runs without)."""
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return True
            gate = _own_gate()
            self._waiting.push(lane, gate)
        if gate.acquire(timeout=timeout):  # release() hands this waiter its turn by unlocking it
            return True
        with self._lock:
            if self._waiting.remove(lane, gate):
                return False
        gate.acquire()  # handed meanwhile: release() took it off the queue and is unlocking it
        return True

    def release(self) -> None:
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            gate = self._waiting.pop()
        gate.release()


_gates = threading.local()


def _own_gate() -> threading.Lock:
    """This thread's gate, made once and kept locked: it waits for a turn by acquiring it again,
    and release() hands the turn over by unlocking it. With an Event per wait (a Condition, and a
    lock made by each wait), taking and giving back turns cost 91 us of CPU per edit at c=16
    (three hand-overs each); with the gate, 67 us."""
    gate: threading.Lock | None = getattr(_gates, "lock", None)
    if gate is None:
        gate = _gates.lock = threading.Lock()
        gate.acquire()
    return gate


_turns: FairTurns | None = None
_turns_lock = threading.Lock()
# .lane: the lane of the request this thread serves (None outside one, or while it waits);
# .owned: whether it holds a turn (False after MAX_WAIT_S without one).
_held = threading.local()


def _process_turns() -> FairTurns:
    global _turns
    if _turns is None:
        with _turns_lock:
            if _turns is None:
                _turns = FairTurns(settings.TURNS_PER_PROCESS)
    return _turns


@contextmanager
def turn(lane: str) -> Iterator[None]:
    """Runs the block while holding a turn of `lane`; a thread that serves a request already
    keeps the turn it has."""
    if getattr(_held, "lane", None) is not None:
        yield
        return
    turns = _process_turns()
    _held.owned, _held.lane = turns.acquire(lane, MAX_WAIT_S), lane
    try:
        yield
    finally:
        _held.lane = None
        if _held.owned:
            turns.release()


@contextmanager
def waiting() -> Iterator[None]:
    """Gives the thread's turn back while the block waits (I/O or sleep); a no-op without one."""
    lane = getattr(_held, "lane", None)
    if lane is None:
        yield
        return
    turns = _process_turns()
    _held.lane = None
    if _held.owned:
        turns.release()
    try:
        yield
    finally:
        _held.owned, _held.lane = turns.acquire(lane, MAX_WAIT_S), lane


@contextmanager
def waiting_long() -> Iterator[None]:
    """`waiting()` for what may take seconds (a provider, a backoff, another request's answer), with
    the thread's pooled database connection (PostgreSQL, settings.py) handed back too: a request
    that had counted its rate limit or claimed its Idempotency-Key kept the connection through its
    provider call, and a few such edits emptied the pool for everyone (503 after its 3 s). Not in
    `waiting()` itself: a wait for the client may come in the middle of a cursor (a CSV export)."""
    if _pooled():
        connection = connections[DEFAULT_DB_ALIAS]
        if connection.connection is not None and not connection.in_atomic_block:
            # Back to the pool; the next query takes one again. A connection that cannot go back
            # (the database went away) is dropped all the same: no reason to fail the request here.
            with suppress(DatabaseError):
                connection.close()
    with waiting():
        yield


@functools.cache
def _pooled() -> bool:
    return bool(settings.DATABASES[DEFAULT_DB_ALIAS].get("OPTIONS", {}).get("pool"))


def released(function: Callable[P, R]) -> Callable[P, R]:
    """`waiting()` around every call of `function` (a call to another server, such as Redis)."""

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with waiting():
            return function(*args, **kwargs)

    return call
