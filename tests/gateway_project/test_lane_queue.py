"""The worker's thread pool takes waiting requests lane by lane (gateway_project/gworker.LanePool),
as the standard library's executor runs them: a request of a quiet route does not wait for a
crowd of another route that queued first."""

import threading
from types import SimpleNamespace

from gateway_project.gworker import LanePool


def _served_order(lanes: list[str]) -> list[str]:
    """One pool thread is busy while requests of `lanes` queue in that order; the order in which
    the pool then serves them."""
    pool = LanePool(max_workers=1)
    busy = threading.Event()
    served: list[str] = []
    pool.submit(busy.wait)
    futures = [pool.submit(lambda conn: served.append(conn.lane), SimpleNamespace(lane=lane)) for lane in lanes]
    busy.set()
    for future in futures:
        future.result(timeout=5)
    pool.shutdown(wait=True)  # the executor's stop signal goes through the same queue
    return served


def test_a_quiet_lane_is_served_before_a_crowd_that_queued_first() -> None:
    served = _served_order(["crowd"] * 5 + ["quiet"])

    assert served.index("quiet") == 1  # after one of the crowd, not after all five
    assert sorted(served) == sorted(["crowd"] * 5 + ["quiet"])


def test_lanes_alternate_and_each_keeps_its_order() -> None:
    assert _served_order(["a", "a", "a", "b", "b", "c"]) == ["a", "b", "c", "a", "b", "a"]


def test_a_cancelled_shutdown_empties_the_queue() -> None:
    pool = LanePool(max_workers=1)
    busy, release = threading.Event(), threading.Event()
    pool.submit(lambda: (busy.set(), release.wait(5)))
    busy.wait(5)
    queued = [pool.submit(print, "never") for _ in range(3)]

    pool.shutdown(wait=False, cancel_futures=True)
    release.set()

    assert all(future.cancelled() for future in queued)
