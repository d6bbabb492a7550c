"""CPU turns (edits_api/turns.py): lanes take turns in rotation, waits give the turn back, and no
request waits for ever on a turn that another waiter needs to give back."""

import sys
import threading
import time

import pytest

from edits_api import turns


def _hold_then_queue(fair: turns.FairTurns, lanes: list[str]) -> list[str]:
    """One thread holds the only turn while the `lanes` queue in that order; the order in which
    they are then served is returned."""
    assert fair.acquire("holder", 1.0)
    served: list[str] = []
    done = threading.Lock()

    def wait_for_turn(lane: str) -> None:
        assert fair.acquire(lane, 5.0)
        with done:
            served.append(lane)
        fair.release()

    threads = []
    for lane in lanes:
        thread = threading.Thread(target=wait_for_turn, args=(lane,))
        thread.start()
        threads.append(thread)
        time.sleep(0.02)  # queued in this order
    fair.release()
    for thread in threads:
        thread.join(5)
    return served


def test_a_quiet_lane_is_served_before_a_crowd_that_queued_first() -> None:
    served = _hold_then_queue(turns.FairTurns(1), ["crowd"] * 5 + ["quiet"])

    assert served.index("quiet") <= 1  # after at most one of the crowd, not after all five
    assert sorted(served) == sorted(["crowd"] * 5 + ["quiet"])


def test_lanes_alternate() -> None:
    served = _hold_then_queue(turns.FairTurns(1), ["a", "a", "a", "b", "b", "b"])

    assert served == ["a", "b", "a", "b", "a", "b"]


def test_a_waiter_runs_without_a_turn_after_its_wait_and_the_count_stays_right() -> None:
    fair = turns.FairTurns(1)
    assert fair.acquire("stuck", 1.0)  # held and never given back within the wait

    began = time.monotonic()
    assert fair.acquire("other", 0.1) is False
    assert time.monotonic() - began < 1.0

    fair.release()  # the one real turn comes back: the next caller gets it at once
    assert fair.acquire("other", 0.1) is True


def test_waits_that_time_out_as_a_turn_is_handed_over_lose_no_turn() -> None:
    """Short waits race with hand-overs (a turn handed to a waiter that has just given up; with
    threads switched every microsecond this happens hundreds of times here): once every thread is
    done, exactly the `slots` turns are left, none lost and none made."""
    fair = turns.FairTurns(2)

    def churn(lane: str) -> None:
        for _ in range(2000):
            if fair.acquire(lane, 0.00002):
                fair.release()

    threads = [threading.Thread(target=churn, args=(f"lane{n % 3}",)) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(interval)

    assert [fair.acquire("after", 0.05) for _ in range(3)] == [True, True, False]


@pytest.mark.django_db
def test_waiting_gives_the_turn_to_another_request(settings) -> None:
    settings.TURNS_PER_PROCESS = 1
    turns._turns = None  # this test's own turns
    entered = threading.Event()
    order: list[str] = []

    def other() -> None:
        with turns.turn("other"):
            order.append("other ran")
            entered.set()

    with turns.turn("first"):
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.05)
        assert not entered.is_set()  # the only turn is ours
        with turns.waiting():
            assert entered.wait(2)  # ours is given back while we wait
        order.append("first resumed")
    thread.join(2)
    turns._turns = None

    assert order == ["other ran", "first resumed"]
