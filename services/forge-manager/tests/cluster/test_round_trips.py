"""Round trips of the coordination API against the request timeout: the start-up probe, the
window of pool-lease writes, and what the coordinator says about them."""

from __future__ import annotations

import logging

import pytest
from forge_manager.cluster.round_trips import (
    CoordinationTooSlow,
    RoundTrips,
    probe,
)

from .doubles import World


class Api:
    """A read that takes ``answers[i]`` seconds of the test clock (an exception: no answer)."""

    def __init__(self, *answers: float | Exception) -> None:
        self.answers = list(answers)
        self.now = 0.0
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def read(self) -> None:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            self.now += 10.0
            raise answer
        self.now += answer


def test_probe_of_an_api_slower_than_the_request_timeout_fails_with_one_line() -> None:
    api = Api(2.5, 1.4, 1.3)
    with pytest.raises(CoordinationTooSlow) as exc:
        probe(api.read, request_timeout=1.0, clock=api.clock)
    message = str(exc.value)
    assert "\n" not in message
    assert message == (
        "the coordination API answered a read of the pool lease in 1.30 s at best (3 tries), "
        "more than KUBE_REQUEST_TIMEOUT=1 s: raise KUBE_REQUEST_TIMEOUT (and "
        "LEASE_RETRY_PERIOD, LEASE_DURATION with it) or use a coordination API closer to this "
        "region"
    )


def test_probe_counts_the_fastest_answer_the_first_one_sets_up_the_connection() -> None:
    api = Api(1.8, 0.05)
    result = probe(api.read, request_timeout=1.0, clock=api.clock)
    assert (result.warning, result.message) == (False, "coordination API round trip 50 ms")
    assert api.calls == 2


def test_probe_warns_when_the_round_trip_is_close_to_the_timeout() -> None:
    api = Api(0.9)
    result = probe(api.read, request_timeout=1.0, clock=api.clock)
    assert result.warning and result.message.startswith("coordination API round trip 0.90 s")
    assert api.calls == 3


def test_probe_of_an_api_that_does_not_answer_starts_anyway() -> None:
    """An outage is not a setting: the pod starts and stays not forging until it answers."""
    api = Api(TimeoutError("read timed out"))
    result = probe(api.read, request_timeout=1.0, clock=api.clock)
    assert result.warning and "did not answer the start-up probe (read timed out)" in (
        result.message
    )
    assert api.calls == 1


def test_writes_approaching_the_timeout_make_the_api_slow_until_none_does() -> None:
    trips = RoundTrips(1.0, window=10)
    for seconds in (0.1, 0.85, 0.2, 1.0):
        trips.record(seconds)
    assert not trips.state().slow  # two near the timeout: a blip
    trips.record(0.9)
    state = trips.state()
    assert state.slow
    assert state.message.startswith(
        "coordination API too slow for the timeouts: 3 of the last 5 pool-lease writes took at "
        "least 0.8 s of KUBE_REQUEST_TIMEOUT=1 s (slowest 1.00 s)"
    )
    for _ in range(9):
        trips.record(0.1)
    assert trips.state().slow  # one near write still in the window
    trips.record(0.1)
    assert not trips.state().slow


def test_slow_writes_are_reported_in_the_status_the_metric_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = World(("east", 1))
    east = w["east"]
    w.elect()
    w.tick(3)
    assert east.condition("CoordinationAPIResponsive")["status"] == "True"
    assert east.metric("cardano_cluster_coordination_api_slow") == 0.0
    assert east.metric("cardano_cluster_pool_lease_write_duration_seconds_count") == 4.0
    east.faults.write_latency = 0.9
    with caplog.at_level(logging.WARNING, "forge_manager.cluster"):
        w.tick(6)
    condition = east.condition("CoordinationAPIResponsive")
    assert (condition["status"], condition["reason"]) == ("False", "RoundTripsNearTimeout")
    assert "raise KUBE_REQUEST_TIMEOUT" in condition["message"]
    assert east.metric("cardano_cluster_coordination_api_slow") == 1.0
    warnings = [r.getMessage() for r in caplog.records if "too slow" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert w.forger() == "east"  # slow, not failing: it keeps forging
    east.faults.write_latency = 0.0
    w.tick(12)
    assert east.condition("CoordinationAPIResponsive")["status"] == "True"
    assert east.metric("cardano_cluster_coordination_api_slow") == 0.0


def test_writes_timing_out_are_reported_too() -> None:
    w = World(("east", 1))
    w["east"].faults.write_latency = 1.5
    w.run(60)
    assert w["east"].condition("CoordinationAPIResponsive")["status"] == "False"
