"""The worklist, the study page with its images, verdicts as labels the trainer counts, monitoring."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
from PIL import Image
from sqlalchemy import select
from structlog.testing import capture_logs

from classifier.model.preprocess import KIDNEY_WINDOW, dicom_to_frames
from review.audit import recent
from storage.db.tables import Label, ReviewVerdict, Study
from tests.integration.review.conftest import ReviewSite, csrf_of, sign_in
from training.trainset import collect_sources


def _signed_in(site: ReviewSite):  # type: ignore[no-untyped-def]
    client = site.client()
    assert sign_in(client) == 303
    return client


def _accessions(site: ReviewSite) -> list[str]:
    with site.sessions() as session:
        return [session.get(Study, i).accession_number for i in site.study_ids]  # type: ignore[union-attr]


def test_worklist_shows_newest_first_with_label_probabilities_model_and_revision(site: ReviewSite) -> None:
    """Both studies by accession, the newer (Tumor) first, each with p, model v1 and revision 1."""
    page = _signed_in(site).get("/").text
    first, second = _accessions(site)
    assert page.index(second) < page.index(first)
    assert "Tumor" in page and "Stone" in page and "0.90" in page and ">v1<" in page and ">1<" in page
    assert "unreviewed" in page


def test_worklist_pages_with_a_keyset_cursor(site: ReviewSite) -> None:
    """One row per page: page two holds the older study and no further link."""
    from dataclasses import replace

    site.config = replace(site.config, page_size=1)
    client = _signed_in(site)
    first, second = _accessions(site)
    page = client.get("/").text
    assert second in page and first not in page
    link = page.split('id="next-page" href="')[1].split('"')[0].replace("&amp;", "&")
    older = client.get(link).text
    assert first in older and second not in older and "next-page" not in older


def test_worklist_filters(site: ReviewSite) -> None:
    """Unreviewed, disagree, model version and dates narrow the list."""
    client = _signed_in(site)
    first, second = _accessions(site)
    token = csrf_of(client)
    client.post(
        f"/studies/{site.study_ids[0]}/verdict",
        data={"verdict": "correct", "label": "Cyst", "csrf_token": token},
    )
    unreviewed = client.get("/?unreviewed=1").text
    assert second in unreviewed and first not in unreviewed
    disagree = client.get("/?disagree=1").text
    assert first in disagree and second not in disagree
    assert first not in client.get("/?model_version=nope").text
    assert first in client.get("/?from=2026-12-01&to=2026-12-01").text
    assert first not in client.get("/?from=2026-12-02").text
    assert "No completed studies match" in client.get("/?indeterminate=1").text  # none is indeterminate


def test_study_page_shows_key_slices_heatmap_toggle_and_sr_in_words(site: ReviewSite) -> None:
    """Two key slices with overlays, the toggle, the SR's finding and probabilities in words."""
    page = _signed_in(site).get(f"/studies/{site.study_ids[0]}").text
    assert page.count('class="overlay"') == 2 and 'id="heatmap-toggle"' in page
    assert "Imaging Measurement Report" in page and "Finding" in page and "Stone" in page
    assert "window 40/400 HU" in page


def test_slice_png_is_the_windowed_slice_at_its_own_resolution(site: ReviewSite) -> None:
    """The PNG equals the classifier's windowing of the archived file, pixel for pixel."""
    client = _signed_in(site)
    png = client.get(f"/studies/{site.study_ids[0]}/slices/0.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(png.content)))
    path = next(site.archive_dir.glob("study-0001/IM0001.dcm"))
    assert np.array_equal(image, dicom_to_frames(path, KIDNEY_WINDOW)[0])
    heat = Image.open(io.BytesIO(client.get(f"/studies/{site.study_ids[0]}/slices/0/heatmap.png").content))
    assert heat.mode == "RGBA" and heat.size == (image.shape[1], image.shape[0])
    assert np.asarray(heat)[..., 3].max() > 100  # the blob is drawn, more opaque where hot
    assert client.get(f"/studies/{site.study_ids[0]}/slices/9.png").status_code == 404


def test_a_correction_is_a_radiologist_label_the_trainer_counts(site: ReviewSite) -> None:
    """Correct to Cyst: a labels row (source radiologist, annotator reader) and the training set has
    the study's slices as Cyst; a changed verdict is a new row and the newest wins."""
    client = _signed_in(site)
    study_id = site.study_ids[0]
    token = csrf_of(client)
    response = client.post(
        f"/studies/{study_id}/verdict",
        data={"verdict": "correct", "label": "cyst", "comment": "small", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    with site.sessions() as session:
        uid = session.get(Study, study_id).study_instance_uid  # type: ignore[union-attr]
        labels = list(session.scalars(select(Label).where(Label.study_instance_uid == uid)))
        assert [(lb.label, lb.source, lb.annotator) for lb in labels] == [("Cyst", "radiologist", "reader")]
        items = [
            i for i in collect_sources(session) if i.group_key and uid in i.group_key or i.label == "Cyst"
        ]
        assert len(items) == 3 and {i.label for i in items} == {"Cyst"}
    client.post(f"/studies/{study_id}/verdict", data={"verdict": "confirm", "csrf_token": token})
    with site.sessions() as session:
        assert session.scalars(select(ReviewVerdict.verdict).order_by(ReviewVerdict.id)).all() == [
            "correct",
            "confirm",
        ]
        assert {i.label for i in collect_sources(session)} == {"Stone"}


def test_not_assessable_writes_a_verdict_but_no_label(site: ReviewSite) -> None:
    """No class to learn: the trainer sees nothing, the verdict and audit row are kept."""
    client = _signed_in(site)
    client.post(
        f"/studies/{site.study_ids[0]}/verdict",
        data={"verdict": "not_assessable", "csrf_token": csrf_of(client)},
    )
    with site.sessions() as session:
        assert session.scalars(select(Label)).all() == []
        assert session.scalars(select(ReviewVerdict.verdict)).all() == ["not_assessable"]


def test_a_bad_verdict_is_refused(site: ReviewSite) -> None:
    """An unknown class or action is a 400 and writes nothing."""
    client = _signed_in(site)
    token = csrf_of(client)
    assert (
        client.post(
            f"/studies/{site.study_ids[0]}/verdict",
            data={"verdict": "correct", "label": "Polyp", "csrf_token": token},
        ).status_code
        == 400
    )
    assert (
        client.post(
            f"/studies/{site.study_ids[0]}/verdict", data={"verdict": "delete", "csrf_token": token}
        ).status_code
        == 400
    )
    assert (
        client.post("/studies/999999/verdict", data={"verdict": "confirm", "csrf_token": token}).status_code
        == 404
    )
    with site.sessions() as session:
        assert session.scalars(select(Label)).all() == []


def test_views_and_verdicts_are_audited_and_access_logs_hold_no_patient_data(site: ReviewSite) -> None:
    """The audit trail names the user, the study row and the verdict; the log names routes only."""
    client = _signed_in(site)
    study_id = site.study_ids[0]
    with capture_logs() as logs:
        client.get(f"/studies/{study_id}")
        client.get(f"/studies/{study_id}/slices/0.png")
        client.post(
            f"/studies/{study_id}/verdict", data={"verdict": "confirm", "csrf_token": csrf_of(client)}
        )
    with site.sessions() as session:
        study = session.get(Study, study_id)
        actions = [(e.action, e.username, e.study_id) for e in recent(session)]
        assert ("study_viewed", "reader", study_id) in actions and (
            "verdict_given",
            "reader",
            study_id,
        ) in actions
        text = repr(logs)
        assert (
            study is not None and study.accession_number not in text and study.study_instance_uid not in text
        )
        assert f"/{study_id}" not in text and "/studies/{study_id:int}" in text


def test_monitoring_shows_agreement_confusion_and_indeterminate_share(site: ReviewSite) -> None:
    """One agreeing and one corrected verdict: agreement 50 %, deliveries pending, no result indeterminate."""
    client = _signed_in(site)
    token = csrf_of(client)
    client.post(
        f"/studies/{site.study_ids[0]}/verdict",
        data={"verdict": "correct", "label": "Cyst", "csrf_token": token},
    )
    client.post(f"/studies/{site.study_ids[1]}/verdict", data={"verdict": "confirm", "csrf_token": token})
    page = client.get("/monitoring").text
    assert "agreement 50.0 %" in page and "indeterminate 0.0 %" in page and "pending 4" in page
    assert "received → result median 90 s" in page


def test_metrics_carry_the_same_figures(site: ReviewSite) -> None:
    """The collector's agreement, deliveries and unreviewed gauges match the page's figures."""
    from prometheus_client import CollectorRegistry, generate_latest

    from review.metrics import ReviewCollector

    client = _signed_in(site)
    client.post(
        f"/studies/{site.study_ids[1]}/verdict", data={"verdict": "confirm", "csrf_token": csrf_of(client)}
    )
    registry = CollectorRegistry()
    registry.register(
        ReviewCollector(site.sessions, indeterminate_recorded=False, clock=lambda: dt.datetime.now(dt.UTC))
    )
    text = generate_latest(registry).decode()
    assert 'kidneyct_review_agreement_ratio{model_version="v1"} 1.0' in text
    assert 'kidneyct_review_deliveries{state="pending"} 4.0' in text
    assert "kidneyct_review_unreviewed_studies 1.0" in text
    assert 'kidneyct_review_turnaround_seconds{model_version="v1",quantile="0.5"} 90.0' in text
    assert "kidneyct_review_indeterminate_ratio{" not in text


def test_indeterminate_results_are_filtered_and_counted(site: ReviewSite) -> None:
    """A study whose label was withheld (`indeterminate_reason`, issue 27's migration) is found by the
    filter and counted in the monitoring share; an older database without the column is shown n/a."""
    from dataclasses import replace

    from sqlalchemy import text

    from review.app import has_indeterminate_column

    assert has_indeterminate_column(site.sessions)
    with site.sessions.begin() as session:
        session.execute(
            text("UPDATE study_predictions SET indeterminate_reason = 'low_evidence' WHERE study_id = :id"),
            {"id": site.study_ids[1]},
        )
    client = _signed_in(site)
    first, second = _accessions(site)
    flagged = client.get("/?indeterminate=1").text
    assert second in flagged and first not in flagged
    assert "indeterminate 50.0 %" in client.get("/monitoring").text
    site.config = replace(site.config, indeterminate_recorded=False)
    assert "indeterminate n/a" in _signed_in(site).get("/monitoring").text


def test_shift_flagged_share_per_version_on_the_page_and_in_metrics(site: ReviewSite) -> None:
    """Slices the shift detector flagged, over those it scored, per model version: on the monitoring page
    and as a gauge; a version whose slices carry no score shows n/a and no gauge."""
    from prometheus_client import CollectorRegistry, generate_latest
    from sqlalchemy import text

    from review.metrics import ReviewCollector

    client = _signed_in(site)
    assert "n/a (no shift detector)" in client.get("/monitoring").text
    with site.sessions.begin() as session:
        session.execute(text("UPDATE predictions SET shift_score = 1.0, shifted = false"))
        first = session.scalar(text("SELECT MIN(id) FROM predictions"))
        session.execute(text("UPDATE predictions SET shifted = true WHERE id = :id"), {"id": first})
        scored = int(session.scalar(text("SELECT COUNT(*) FROM predictions")) or 0)
    assert scored >= 2
    share = 1 / scored
    assert f"slices unlike the training data {100 * share:.1f} %" in client.get("/monitoring").text
    registry = CollectorRegistry()
    registry.register(
        ReviewCollector(site.sessions, indeterminate_recorded=True, clock=lambda: dt.datetime.now(dt.UTC))
    )
    metrics = generate_latest(registry).decode()
    assert f'kidneyct_review_shifted_slice_ratio{{model_version="v1"}} {share!r}' in metrics
