"""storage.db.labels: validated labels, and an instance's own label beating its study's."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.db.labels import InvalidLabel, add_label, count_labels_since, labelled_instances
from storage.db.results import (
    InstanceRow,
    SeriesRow,
    StudyRow,
    upsert_instances,
    upsert_series,
    upsert_studies,
)

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _instances(session: Session, *sops: str) -> None:
    study_ids = upsert_studies(session, studies=[StudyRow("1.2.3", None, T0)])
    series_ids = upsert_series(session, series=[SeriesRow("1.2.3.0", "1.2.3", "CT")], study_ids=study_ids)
    rows = [
        InstanceRow(
            sop_instance_uid=sop,
            series_instance_uid="1.2.3.0",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            archive_uri=f"file:///archive/{sop}.dcm",
            sha256="ab" * 32,
            size_bytes=10,
            calling_ae=None,
            instance_number=None,
            number_of_frames=1,
            received_at=T0,
            state="received",
        )
        for sop in sops
    ]
    upsert_instances(session, instances=rows, series_ids=series_ids, now=T0)


def test_an_instance_label_beats_its_study_label(sessions: sessionmaker[Session]) -> None:
    """With a study labelled Cyst and one of its slices labelled Normal, that slice is Normal, the other Cyst."""
    with sessions.begin() as session:
        _instances(session, "1.2.3.1", "1.2.3.2")
        add_label(session, label="Cyst", source="pathology", now=T0, study_instance_uid="1.2.3")
        add_label(session, label="Normal", source="radiologist", now=T0, sop_instance_uid="1.2.3.2")
    with sessions() as session:
        found = {(i.sop_instance_uid, i.label, i.label_scope) for i in labelled_instances(session)}
        assert found == {("1.2.3.1", "Cyst", "study"), ("1.2.3.2", "Normal", "instance")}
        assert count_labels_since(session, since=None) == 2
        assert count_labels_since(session, since=T0) == 0


@pytest.mark.parametrize(
    ("label", "targets", "source"),
    [
        ("Kidney", {"sop_instance_uid": "1.2"}, "manual"),  # not a class
        ("Cyst", {}, "manual"),  # no target
        ("Cyst", {"sop_instance_uid": "1.2", "study_instance_uid": "1"}, "manual"),  # two targets
        ("Cyst", {"sop_instance_uid": "1.2"}, ""),  # no source
    ],
)
def test_an_invalid_label_is_refused(
    sessions: sessionmaker[Session], label: str, targets: dict[str, str], source: str
) -> None:
    """Unknown class, zero or two targets, or an empty source: InvalidLabel, nothing written."""
    with sessions() as session:
        with pytest.raises(InvalidLabel):
            add_label(session, label=label, source=source, now=T0, **targets)
        assert count_labels_since(session, since=None) == 0
