"""A scripted Prometheus at the service's own client seam (``QueryClient``), for unit tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from health_endpoint.prometheus import PrometheusUnavailable, QueryRejected, Sample

Answer = float | Sequence[float] | Exception | None


class ScriptedPrometheus:
    """A ``QueryClient`` answering by the first matching substring of the query.

    An answer is a value, a list of values (one per series), ``None`` (no series) or an
    exception to raise. Unmatched queries return no series. Every query is recorded.
    """

    def __init__(self, answers: dict[str, Answer] | None = None) -> None:
        self.answers: dict[str, Answer] = dict(answers or {})
        self.queries: list[str] = []
        self.before: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    def query(self, promql: str) -> Sequence[Sample]:
        with self._lock:
            self.queries.append(promql)
        if self.before is not None:
            self.before(promql)
        for fragment, answer in self.answers.items():
            if fragment in promql:
                if isinstance(answer, Exception):
                    raise answer
                if answer is None:
                    return []
                if isinstance(answer, int | float):
                    return [Sample(float(answer))]
                return [Sample(float(v)) for v in answer]
        return []


def healthy_answers() -> dict[str, Answer]:
    """Answers that make every default check healthy."""
    return {
        "count(up{cluster": 2,  # the cluster probe: two targets
        "count(up{job": 0,  # no cardano-node target down
        "max(up{job": 1,
        "cardano_node_metrics_slotNum_int": 12,  # sync lag in seconds
        "remainingKESPeriods": 40,
        "connectedPeers": 3,
        "node_filesystem": 23.1,
        "node_cpu_seconds_total": 45.2,
        "node_memory": 67.8,
    }


__all__ = [
    "Answer",
    "PrometheusUnavailable",
    "QueryRejected",
    "ScriptedPrometheus",
    "healthy_answers",
]
