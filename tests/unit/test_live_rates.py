"""The dashboard's pure parts: request rates from monotonic router totals, the sparkline, sessions."""

from __future__ import annotations

import time

from herdsman.agent.dashboard import Sessions
from herdsman.agent.live import KEEP, RateHistory, per_service, sparkline


def test_totals_per_release_add_up_per_service() -> None:
    assert per_service({("web", "1"): 10, ("web", "2"): 5, ("api", "2"): 3}) == {"web": 15, "api": 3}


def test_a_rate_is_the_increase_over_the_time_between_readings() -> None:
    history = RateHistory()
    assert history.observe(100.0, {"web": 10}) and history.latest("web") == 0.0  # one reading: no rate
    assert not history.observe(100.5, {"web": 50}), "at most one reading a second"
    assert history.observe(102.0, {"web": 50})
    assert history.latest("web") == 20.0
    assert history.observe(103.0, {"web": 50, "api": 7})
    assert list(history.rates["web"]) == [20.0, 0.0]
    assert history.latest("api") == 7.0, "a service new since the last reading counts from zero"


def test_the_history_is_bounded() -> None:
    history = RateHistory()
    for second in range(KEEP + 10):
        history.observe(float(second), {"web": second * 3})
    assert len(history.rates["web"]) == KEEP and set(history.rates["web"]) == {3.0}


def test_the_sparkline_spans_the_box_and_peaks_at_the_top() -> None:
    assert sparkline([]) == ""
    points = [
        tuple(map(float, p.split(","))) for p in sparkline([0.0, 5.0, 10.0], width=100, height=20).split()
    ]
    assert [x for x, _ in points] == [0.0, 50.0, 100.0]
    assert points[0][1] == 19.0 and points[2][1] == 1.0  # zero at the bottom, the highest at the top
    assert sparkline([0.0, 0.0]).split()[1] == "120.0,23.0", "no division by zero when nothing happens"


def test_sessions_are_random_ids_with_their_own_csrf_token() -> None:
    sessions = Sessions()
    one, two = sessions.open(), sessions.open()
    assert one != two and len(one) >= 40
    assert sessions.csrf(one) and sessions.csrf(one) != sessions.csrf(two)
    assert sessions.csrf("forged") is None and sessions.csrf(None) is None
    sessions.close(one)
    assert sessions.csrf(one) is None and sessions.csrf(two) is not None
    csrf, _ = sessions.live[two]
    sessions.live[two] = (csrf, time.time() - 1)
    assert sessions.csrf(two) is None, "an expired session is no session"
