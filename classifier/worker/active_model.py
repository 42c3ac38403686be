"""The active model, beside the pipeline: loaded at start, switched between batches when another
version is promoted (`kidneyct models promote`), kept when the new one cannot be loaded."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.serving import ServingModel
from classifier.worker.errors import ArtifactError, NoActiveModel
from classifier.worker.every import Every
from classifier.worker.metrics import WorkerMetrics
from classifier.worker.retrying import Retry
from storage.db.model_versions import get_active_model_version
from storage.db.tables import ModelVersion

log = structlog.get_logger(__name__)


@dataclass(kw_only=True)
class ActiveModel:
    sessions: sessionmaker[Session]
    load_model: Callable[[ModelVersion], ServingModel]
    metrics: WorkerMetrics
    retry: Retry
    poll: Every  # how often to look for another active version
    _serving: ServingModel | None = field(default=None, init=False)

    @property
    def loaded(self) -> bool:
        return self._serving is not None

    @property
    def serving(self) -> ServingModel:
        if self._serving is None:
            raise NoActiveModel("no model loaded yet")
        return self._serving

    @property
    def serving_or_none(self) -> ServingModel | None:
        return self._serving

    def start(self) -> ServingModel:
        """Load the active model version; `NoActiveModel` when there is none."""
        row = self.retry("read_active_model", self._read_active)
        if row is None:
            raise NoActiveModel(
                "no active model version: train one (`kidneyct train`) and make it active "
                "(`kidneyct models promote VERSION`)"
            )
        self._use(self.load_model(row))
        self.metrics.model_ready.set(1)
        self.poll.restart()
        log.info("model_loaded", model_version=self.serving.version, image_size=self.serving.card.image_size)
        return self.serving

    def wait_until_loaded(self, stop: threading.Event) -> bool:
        """`start`, polling every `poll.interval_s` while no model is active or its artifact is unusable.

        A site's first worker starts before its first model exists: it says so once in its log,
        reports not-ready (`kidneyct_worker_model_ready` 0) and keeps polling instead of exiting, so
        a supervisor (`restart: unless-stopped`) sees no crash loop. False when stopped meanwhile.
        """
        said = None
        while not stop.is_set():
            try:
                self.start()
                return True
            except (NoActiveModel, ArtifactError) as exc:
                self.metrics.model_ready.set(0)
                if str(exc) != said:  # once per reason, not once per poll
                    event = (
                        "waiting_for_active_model"
                        if isinstance(exc, NoActiveModel)
                        else "active_model_unusable"
                    )
                    log.warning(event, reason=str(exc), poll_s=self.poll.interval_s)
                    said = str(exc)
            stop.wait(self.poll.interval_s)
        return False

    def maybe_switch(self) -> None:
        """Every `poll`: load the version promoted meanwhile; keep serving when that fails."""
        if not self.poll.due():
            return
        try:
            row = self._read_active()
        except SQLAlchemyError as exc:
            log.warning("model_check_failed", error=type(exc).__name__)
            return
        current = self.serving
        if row is None:
            log.warning("no_active_model_keeps_serving", model_version=current.version)
            return
        if row.id == current.model_version_id:
            return
        try:
            loaded = self.load_model(row)
        except ArtifactError as exc:
            log.error("model_switch_refused", model_version=row.version, error=str(exc))
            return
        self._use(loaded)
        log.info("model_switched", previous=current.version, model_version=row.version)

    def _use(self, serving: ServingModel) -> None:
        self._serving = serving
        self.metrics.model_switches.inc()
        self.metrics.model.info({"version": serving.version, "image_size": str(serving.card.image_size)})

    def _read_active(self) -> ModelVersion | None:
        with self.sessions() as session:
            return get_active_model_version(session)
