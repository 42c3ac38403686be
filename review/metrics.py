"""The monitoring page's figures as Prometheus metrics, computed from the database at each scrape.

Served on the review process's metrics endpoint (KIDNEYCT_METRICS_PORT), not on the web app: the
figures carry no patient data, and Prometheus needs no account. The alerting rules in
deploy/prometheus/kidneyct-alerts.yml read these names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from review.monitoring import Monitoring, monitoring


def families(figures: Monitoring) -> list[GaugeMetricFamily]:
    def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels)

    results = gauge("kidneyct_review_results", "Complete clinical study results.", ["model_version"])
    reviewed = gauge("kidneyct_review_reviewed", "Studies with a reader's class.", ["model_version"])
    agreement = gauge(
        "kidneyct_review_agreement_ratio",
        "Share of reviewed studies where the reader agrees.",
        ["model_version"],
    )
    macro_f1 = gauge(
        "kidneyct_review_macro_f1", "Macro-F1 of the AI's study labels against readers.", ["model_version"]
    )
    recent_n = gauge(
        "kidneyct_review_recent_reviewed", "Studies reviewed in the last 7 days.", ["model_version"]
    )
    recent = gauge(
        "kidneyct_review_recent_disagreement_ratio",
        "Share of the last 7 days' verdicts that disagree.",
        ["model_version"],
    )
    indeterminate = gauge(
        "kidneyct_review_indeterminate_ratio", "Share of results that are indeterminate.", ["model_version"]
    )
    shifted = gauge(
        "kidneyct_review_shifted_slice_ratio",
        "Share of scored slices the shift detector flagged as unlike the training data.",
        ["model_version"],
    )
    turnaround = gauge(
        "kidneyct_review_turnaround_seconds",
        "First instance received to complete result.",
        ["model_version", "quantile"],
    )
    for v in figures.versions:
        results.add_metric([v.version], v.n_results)
        reviewed.add_metric([v.version], v.n_reviewed)
        recent_n.add_metric([v.version], v.recent_reviewed)
        for family, value in (
            (agreement, v.agreement),
            (macro_f1, v.macro_f1),
            (recent, v.recent_disagreement),
            (indeterminate, v.indeterminate_share),
            (shifted, v.shifted_share),
        ):
            if value is not None:
                family.add_metric([v.version], value)
        for quantile, value in (("0.5", v.turnaround_median_s), ("0.9", v.turnaround_p90_s)):
            if value is not None:
                turnaround.add_metric([v.version, quantile], value)
    deliveries = gauge("kidneyct_review_deliveries", "Result deliveries to PACS by state.", ["state"])
    for state, n in figures.deliveries.items():
        deliveries.add_metric([state], n)
    unreviewed = GaugeMetricFamily(
        "kidneyct_review_unreviewed_studies", "Complete results without a verdict.", value=figures.unreviewed
    )
    out = [
        results,
        reviewed,
        agreement,
        macro_f1,
        recent_n,
        recent,
        indeterminate,
        shifted,
        turnaround,
        deliveries,
        unreviewed,
    ]
    if figures.verdicts_since_active is not None:
        out.append(
            GaugeMetricFamily(
                "kidneyct_review_labels_since_active_model",
                "Radiologists' labels since the active model was trained.",
                value=figures.verdicts_since_active,
            )
        )
    return out


class ReviewCollector(Collector):
    """Reads the figures at each scrape (point values only: no bootstrap)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        indeterminate_recorded: bool,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._sessions = sessions
        self._indeterminate = indeterminate_recorded
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._sessions() as session:
            figures = monitoring(
                session, now=self._clock(), indeterminate_recorded=self._indeterminate, n_boot=0
            )
        yield from families(figures)
