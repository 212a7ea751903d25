"""The dashboard's pure parts: request rates from monotonic router totals, per release error rates
and quantiles from the router's histograms, the sparkline, sessions."""

from __future__ import annotations

import time

from herdsman.agent.dashboard import Sessions
from herdsman.agent.live import KEEP, RateHistory, SeriesHistory, per_service, sparkline, windows
from herdsman.agent.metrics import RouterTotals
from herdsman.deploy.verdict import Window


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


def _stats(instance: str, requests: int, errors: int, five: int, hist: dict[int, int]) -> dict[str, object]:
    return {
        "production/web": {
            "latency_bounds_ms": [1.0, 2.0, 4.0, 8.0],
            "backends": [
                {
                    "instance": instance,
                    "requests": requests,
                    "errors": errors,
                    "responses_5xx": five,
                    "mean_latency_ms": 2.0,
                    "latency_hist": {str(i): n for i, n in hist.items()},
                }
            ],
        }
    }


def test_router_totals_keep_5xx_answers_and_latency_histograms_per_release() -> None:
    totals = RouterTotals()
    release_of = lambda instance: instance.split("-")[1]  # noqa: E731
    totals.update("production", _stats("web-1-a", 10, 1, 2, {0: 8, 3: 2}), release_of)
    totals.update("production", _stats("web-1-a", 30, 1, 5, {0: 20, 3: 10}), release_of)
    assert totals.requests[("web", "1")] == 30 and totals.answers_5xx[("web", "1")] == 5
    assert totals.histograms[("web", "1")] == [20, 0, 0, 10, 0]
    # the instance is replaced by one of release 2: its counters start at zero, release 1's stay
    totals.update("production", _stats("web-2-b", 4, 0, 0, {1: 4}), release_of)
    assert totals.histograms[("web", "1")] == [20, 0, 0, 10, 0]
    assert totals.histograms[("web", "2")] == [0, 4, 0, 0, 0]
    haproxy = RouterTotals()  # a router without histograms: no latency, still rates
    haproxy.update(
        "production", {"production/web": {"backends": [{"instance": "web-1-a", "requests": 3}]}}, release_of
    )
    assert haproxy.histograms == {} and windows(haproxy)[("web", "1")].quantile(0.5) is None


def test_each_release_gets_its_rate_error_rate_and_quantiles_per_second() -> None:
    totals = RouterTotals()
    release_of = lambda instance: instance.split("-")[1]  # noqa: E731
    series = SeriesHistory()
    totals.update("production", _stats("web-1-a", 100, 0, 0, {0: 100}), release_of)
    assert series.observe(10.0, windows(totals)) and series.charts() == []  # one reading: no point yet
    totals.update("production", _stats("web-1-a", 300, 2, 8, {0: 100, 1: 150, 3: 50}), release_of)
    assert not series.observe(10.5, windows(totals)), "at most one reading a second"
    assert series.observe(12.0, windows(totals))
    (point,) = series.points[("web", "1")]
    assert point.rate == 100.0 and point.error_rate == 0.05  # 200 requests in 2 s, 10 of them failed
    assert point.p50_ms == 2.0 and point.p99_ms == 8.0  # from the 200 requests of the window only
    series.observe(13.0, windows(totals))
    quiet = series.points[("web", "1")][-1]
    assert quiet.rate == 0.0 and quiet.p50_ms is None, "no request, so no latency"
    (chart,) = series.charts()
    assert chart["release"] == "1" and chart["rate"] == 0.0 and chart["p99"] is None
    assert len(chart["lines"]["p99"].split()) == 1, "a second without requests is a gap"  # type: ignore[index]


def test_charts_list_the_newest_release_first_within_a_service() -> None:
    series = SeriesHistory()
    empty = (0, 0, 0, 0, 0)
    bounds = (1.0, 2.0, 4.0, 8.0)
    keys = [("web", "2"), ("web", "10"), ("api", "3")]
    series.observe(0.0, {k: Window(0, 0, empty, bounds) for k in keys})
    series.observe(1.0, {k: Window(5, 0, (5, 0, 0, 0, 0), bounds) for k in keys})
    assert [(c["service"], c["release"]) for c in series.charts()] == [
        ("api", "3"),
        ("web", "10"),
        ("web", "2"),
    ]
    assert len(series.points[("web", "2")]) == 1 and len(series.points[("web", "2")]) <= KEEP


def test_a_release_without_requests_for_a_minute_loses_its_chart() -> None:
    bounds = (1.0, 2.0, 4.0, 8.0)
    series = SeriesHistory()
    series.observe(0.0, {("web", "1"): Window(0, 0, (0,) * 5, bounds)})
    series.observe(1.0, {("web", "1"): Window(0, 0, (0,) * 5, bounds)})
    assert series.charts() == [], "no request yet: no chart"
    series.observe(2.0, {("web", "1"): Window(4, 0, (4, 0, 0, 0, 0), bounds)})
    for second in range(3, 3 + KEEP - 1):
        series.observe(float(second), {("web", "1"): Window(4, 0, (4, 0, 0, 0, 0), bounds)})
    assert len(series.points[("web", "1")]) == KEEP, "a minute that began with requests is kept"
    series.observe(float(3 + KEEP), {("web", "1"): Window(4, 0, (4, 0, 0, 0, 0), bounds)})
    assert series.charts() == [], "the retired release's chart is gone"


def test_samples_of_a_large_router_are_further_apart() -> None:
    from herdsman.agent.daemon import SAMPLE_EVERY, sample_pause

    totals = RouterTotals()
    many = {"production/web": {"backends": [{"instance": f"web-1-{n}", "requests": 1} for n in range(1000)]}}
    totals.update("production", many, lambda instance: "1")
    assert totals.backends == 1000
    assert (
        sample_pause(0) == sample_pause(500) == SAMPLE_EVERY
        and sample_pause(totals.backends) == 2 * SAMPLE_EVERY
    )
