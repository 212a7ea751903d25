"""The burst's adaptive start window (deploy/pace.py): slow start, additive increase, halving on
congestion once per round, never below its floor nor above its ceiling."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herdsman.deploy.pace import Pace


def admit(pace: Pace, seconds: float = 0.1, runnable: float = 0.5) -> bool:
    return pace.admitted(pace.launch(), seconds, runnable)


def test_slow_start_doubles_the_window_per_round_while_admissions_keep_up() -> None:
    pace = Pace(limit=4, ceiling=64)
    pace.begin(0.5)
    for _ in range(4):  # one round of four admissions, none slow
        assert admit(pace) is False
    assert pace.slots == 8
    for _ in range(8):
        admit(pace)
    assert pace.slots == 16


def test_the_window_never_passes_its_ceiling() -> None:
    pace = Pace(limit=4, ceiling=10)
    pace.begin(0.0)
    for _ in range(100):
        admit(pace)
    assert pace.slots == 10


def test_a_slow_admission_halves_the_window_and_ends_slow_start() -> None:
    pace = Pace(limit=4)
    pace.begin(0.5)
    for _ in range(12):
        admit(pace, 0.1)
    assert pace.slots == 16
    assert admit(pace, 2.0) is True  # twenty times the fastest: the starts queue for the CPU
    assert pace.slots == 8 and not pace.growing and pace.cuts == 1
    for _ in range(9):  # additive increase now: about one slot per round (1/limit each)
        admit(pace, 0.1)
    assert pace.slots == 9


def test_a_climbing_run_queue_is_congestion_but_a_busy_machine_alone_is_not() -> None:
    busy = Pace(limit=4)
    busy.begin(5.0)  # another job keeps five tasks per core runnable before the burst begins
    for _ in range(4):
        assert admit(busy, 0.1, runnable=5.5) is False
    assert busy.slots == 8
    assert admit(busy, 0.1, runnable=12.0) is True  # smoothed, it climbs past 5 + 2
    assert busy.slots == 4


def test_one_cut_per_round_admissions_launched_before_it_say_nothing_new() -> None:
    pace = Pace(limit=16)
    pace.begin(0.0)
    tickets = [pace.launch() for _ in range(16)]
    pace.admitted(tickets[0], 0.1, 0.0)
    assert pace.admitted(tickets[1], 5.0, 0.0) is True
    after_cut = pace.slots
    for ticket in tickets[2:]:  # the rest of that round was slow too: already answered
        assert pace.admitted(ticket, 5.0, 0.0) is False
    assert pace.slots == after_cut and pace.cuts == 1
    assert pace.admitted(pace.launch(), 5.0, 0.0) is True  # a start of the new round: cut again
    assert pace.cuts == 2


def test_failures_back_off_to_the_floor_and_no_further() -> None:
    pace = Pace(limit=32, floor=2)
    pace.begin(0.0)
    for _ in range(10):
        pace.failed(pace.launch())
    assert pace.slots == 2


events = st.lists(
    st.tuples(st.sampled_from(["ok", "slow", "busy", "fail"]), st.floats(0.01, 10.0)), max_size=300
)


@given(events, st.integers(1, 8), st.integers(8, 128))
def test_the_window_stays_within_its_bounds(
    history: list[tuple[str, float]], floor: int, ceiling: int
) -> None:
    pace = Pace(floor=floor, ceiling=ceiling)
    pace.begin(1.0)
    for kind, seconds in history:
        ticket = pace.launch()
        if kind == "fail":
            pace.failed(ticket)
        else:
            pace.admitted(ticket, seconds * (20 if kind == "slow" else 1), 9.0 if kind == "busy" else 1.0)
        assert floor <= pace.slots <= ceiling
    assert all(floor <= s <= ceiling for s in pace.history)


def test_each_cut_says_its_cause() -> None:
    pace = Pace(limit=4)
    pace.begin(0.0)
    admit(pace, 0.1)
    assert pace.congestion(0.1) == "" and pace.congestion(5.0) == "slow"
    pace.admitted(pace.launch(), 5.0, 0.0)
    pace.admitted(pace.launch(), 0.1, 50.0)  # the run queue climbs far past the start's
    pace.failed(pace.launch())
    assert pace.reasons == {"slow": 1, "busy": 1, "failed": 1} and pace.cuts == 3
