"""The shipped Prometheus alerting rules are valid for promtool and read metrics the review station serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import missing_service

RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "kidneyct-alerts.yml"
REVIEW_METRICS = Path(__file__).resolve().parents[3] / "review" / "metrics.py"


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` (Debian's prometheus package) passes; skipped locally without it, failed in CI."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_service("promtool missing: apt-get install prometheus (tests/services/debian-packages.sh)")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_rules_cover_disagreement_deliveries_and_backlog_with_metrics_we_serve() -> None:
    """Each alert names a kidneyct_review_* metric that review/metrics.py defines."""
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {
        "KidneyctDisagreementRising",
        "KidneyctDeliveriesFailing",
        "KidneyctReviewBacklogGrowing",
    } <= names
    served = set(re.findall(r'"(kidneyct_review_[a-z_0-9]+)"', REVIEW_METRICS.read_text()))
    for rule in rules:
        used = set(re.findall(r"kidneyct_review_[a-z_0-9]+", rule["expr"]))
        assert used and used <= served, (rule["alert"], used - served)
