"""The study-completion sweep: mark stable studies complete, announce them and queue their reports.

Run by the worker between batches (`Worker.sweep_completed_studies`); it shares the worker's
database and, per sweep, its results publisher and (for heat maps) its serving model, but none of
its batch state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.serving import ServingModel
from classifier.report.build import HeatMapper, ResultConfig, build_objects
from classifier.report.contents import StudyReport
from classifier.study.policy import PolicySettings
from classifier.study.rule import completion_cutoff, is_complete, is_complete_after_release
from classifier.worker import messages
from classifier.worker.metrics import WorkerMetrics
from classifier.worker.release_hints import ReleasedStudies
from storage.archive.reader import ArchiveReader
from storage.db.model_versions import get_model_version
from storage.db.outbox import NewObject, add_report
from storage.db.report_inputs import key_slices, previous_report, study_identity
from storage.db.results import (
    IncompleteStudy,
    StudyResult,
    incomplete_studies,
    mark_study_complete,
    study_result,
)
from storage.stream.contract import Publisher
from storage.stream.events import ReleaseHint

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CompletionOptions:
    topic_results: str
    stable_age_s: float
    policy: PolicySettings
    results: ResultConfig
    reader: Callable[[], ArchiveReader]
    # After a release hint, a study is complete this long after its last activity (not stable_age_s).
    release_grace_s: float = 3.0


@dataclass
class _Completion:
    """A study result about to be completed: its report and announcement, then its objects."""

    candidate: IncompleteStudy
    report: StudyReport
    message: bytes
    objects: list[NewObject] = field(default_factory=list)
    build_error: str | None = None


def _forced_note(session: Session, version: str) -> str | None:
    """A forced promotion's note (with its reason), for the SR's algorithm description; else None."""
    row = get_model_version(session, version=version)
    note = row.promotion_note if row is not None else None
    return note[:200] if note and note.startswith("FORCED") else None


class StudyCompletion:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        options: CompletionOptions,
        metrics: WorkerMetrics,
        clock: Callable[[], float],
    ) -> None:
        self._sessions = sessions
        self._options = options
        self._metrics = metrics
        self._clock = clock
        self._heat_mapper = HeatMapper()
        # Hints outlive the timer by a margin only: after stable_age_s the timer decides anyway.
        self._released = ReleasedStudies(keep_s=options.stable_age_s + options.release_grace_s)

    def note_released(self, hints: list[ReleaseHint]) -> None:
        """Release hints read from the stream, after the instances before them were written."""
        self._released.note(hints)

    def sweep(self, now: dt.datetime, *, publisher: Publisher, serving: ServingModel | None) -> int:
        """Mark stable studies complete, announce them and queue their reports for PACS.

        Short steps, so that no database transaction is open while building or publishing (on the
        embedded default the publisher writes to the same SQLite file): read the candidates, build
        each one's DICOM objects (SR, heat map; skipped without destinations), announce them
        (at-least-once), then mark each complete unless it was re-opened meanwhile, and in the
        same transaction record its report revision and outbox rows.
        """
        completions = self._completable_studies(now)
        # A shadow's (or a non-active reprocess's) results: completed, never announced or reported.
        quiet = [c.candidate for c in completions if c.candidate.shadow]
        completions = [c for c in completions if not c.candidate.shadow]
        for c in completions:
            c.objects, c.build_error = self._build_objects(c, serving)
        for c in completions:
            publisher.publish(self._options.topic_results, c.candidate.study_instance_uid.encode(), c.message)
        done = 0
        with self._sessions.begin() as session:
            done += complete_quietly(session, quiet, now=now)
            for c in completions:
                if self._record(session, c, now):
                    done += 1
        self._metrics.studies_completed.inc(done)
        return done

    def _count_indeterminate(self, c: _Completion) -> None:
        if c.report.indeterminate_reason is not None:
            self._metrics.studies_indeterminate.labels(reason=c.report.indeterminate_reason).inc()

    def _record(self, session: Session, c: _Completion, now: dt.datetime) -> bool:
        marked = mark_study_complete(
            session,
            study_prediction_id=c.candidate.study_prediction_id,
            expected_updated_at=c.candidate.updated_at,
            now=now,
        )
        if not marked:
            return False
        self._count_indeterminate(c)
        add_report(
            session,
            study_id=c.candidate.study_id,
            model_version_id=c.candidate.model_version_id,
            revision=c.report.revision,
            label=c.report.label,
            key_slices=c.report.key_slices,
            objects=c.objects,
            destinations=self._options.results.destinations,
            build_error=c.build_error,
            now=now,
        )
        log.info(
            "study_completed",
            study_instance_uid=c.candidate.study_instance_uid,
            model_version=c.report.model_version,
            label=c.report.label,
            indeterminate_reason=c.report.indeterminate_reason,
            revision=c.report.revision,
            result_objects=len(c.objects),
        )
        return True

    def _completable_studies(self, now: dt.datetime) -> list[_Completion]:
        self._released.expire(now)
        shortest = self._options.stable_age_s
        if len(self._released):
            shortest = min(shortest, self._options.release_grace_s)
        out: list[_Completion] = []
        with self._sessions() as session:
            for candidate in incomplete_studies(session, cutoff=completion_cutoff(now, shortest)):
                if not self._is_complete(candidate, now):
                    continue
                result = study_result(session, study_prediction_id=candidate.study_prediction_id)
                if result is None:
                    continue
                out.append(self._completion(session, candidate, result, now))
        for c in out:  # a late instance's new association brings a new hint
            self._released.forget(c.candidate.study_instance_uid)
        return out

    def _is_complete(self, candidate: IncompleteStudy, now: dt.datetime) -> bool:
        """Complete by the stable-age timer, or earlier by a release hint (classifier.study.rule)."""
        received, updated, pending = (
            candidate.last_received_at,
            candidate.updated_at,
            candidate.pending_instances,
        )
        if is_complete(
            last_received_at=received,
            last_updated_at=updated,
            pending_instances=pending,
            now=now,
            stable_age_s=self._options.stable_age_s,
        ):
            return True
        released_at = self._released.released_at(candidate.study_instance_uid)
        return released_at is not None and is_complete_after_release(
            last_received_at=received,
            last_updated_at=updated,
            pending_instances=pending,
            released_at=released_at,
            now=now,
            grace_s=self._options.release_grace_s,
        )

    def _completion(
        self, session: Session, candidate: IncompleteStudy, result: StudyResult, now: dt.datetime
    ) -> _Completion:
        accession, issuer = study_identity(session, study_id=candidate.study_id)
        previous = previous_report(session, study_id=candidate.study_id)
        revision = previous[0] + 1 if previous else 1
        policy = self._options.policy.policy(result.card.get("decision"))
        rule = policy.rule
        report = StudyReport(
            study_instance_uid=candidate.study_instance_uid,
            model_version=result.model_version,
            revision=revision,
            label=result.label,
            max_probability=result.max_probability,
            n_instances=result.n_instances,
            rule=rule,
            key_slices=tuple(
                key_slices(
                    session,
                    study_id=candidate.study_id,
                    model_version_id=candidate.model_version_id,
                    label=result.label,
                    limit=rule.min_slices,
                )
            ),
            completed_at=now,
            previous=(previous[1], previous[0]) if previous else None,
            forced_note=_forced_note(session, result.model_version),
            policy=policy,
            indeterminate_reason=result.indeterminate_reason,
            evidence=result.evidence,
            n_shifted=result.n_shifted,
            temperature=float((result.card.get("calibration") or {}).get("temperature", 1.0)),
        )
        message = messages.study_complete(
            study_instance_uid=candidate.study_instance_uid,
            model_version=result.model_version,
            label=None if result.indeterminate_reason else result.label,
            max_probability=result.max_probability,
            n_predicted=result.n_predicted,
            n_instances=result.n_instances,
            completed_at=now,
            revision=revision,
            accession_number=accession,
            accession_number_issuer=issuer,
            indeterminate_reason=result.indeterminate_reason,
        )
        return _Completion(candidate=candidate, report=report, message=message)

    def _build_objects(
        self, c: _Completion, serving: ServingModel | None
    ) -> tuple[list[NewObject], str | None]:
        """The report's DICOM objects; none without destinations; on failure, none and the reason."""
        results = self._options.results
        if not results.destinations:
            return [], None
        if not c.report.key_slices:
            return [], "no predicted slice to reference"
        if serving is not None and serving.model_version_id != c.candidate.model_version_id:
            serving = None  # heat maps only from the model that made the result
        started = self._clock()
        try:
            objects = build_objects(
                c.report,
                archive=self._options.reader(),
                heatmap=results.heatmap,
                serving=serving,
                mapper=self._heat_mapper,
            )
        except Exception as exc:  # noqa: BLE001 - any failure of one study's objects is recorded, not fatal
            # The type only: messages of DICOM libraries may quote attribute values (patient data).
            log.error(
                "result_build_failed",
                study_instance_uid=c.candidate.study_instance_uid,
                error=type(exc).__name__,
            )
            return [], f"{type(exc).__name__}: {exc}"
        log.info(
            "result_built",
            study_instance_uid=c.candidate.study_instance_uid,
            revision=c.report.revision,
            kinds=[o.kind for o in objects],
            heatmap_skipped=serving is None and results.heatmap != "none",
            build_s=round(self._clock() - started, 3),
        )
        return objects, None


def complete_quietly(session: Session, candidates: Sequence[IncompleteStudy], *, now: dt.datetime) -> int:
    """Mark stable `shadow` study results complete: no results-topic message, no report, no outbox
    rows (the sweep does this for them instead of announcing). Returns how many."""
    done = 0
    for c in candidates:
        if mark_study_complete(
            session, study_prediction_id=c.study_prediction_id, expected_updated_at=c.updated_at, now=now
        ):
            done += 1
            log.info(
                "shadow_study_completed",
                study_instance_uid=c.study_instance_uid,
                model_version_id=c.model_version_id,
            )
    return done
