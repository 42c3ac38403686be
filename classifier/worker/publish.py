"""The publish step: each written instance's result, and each poison event's dead letter.

After the database commit and before the offsets: a crash in between publishes again (results are
at-least-once; consumers key them by SOP Instance UID and model version). Retried through outages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from classifier.worker import messages
from classifier.worker.decoding import PoisonInstance
from classifier.worker.predict import Predicted
from classifier.worker.retrying import Retry
from storage.stream.contract import Publisher


@dataclass(frozen=True, kw_only=True)
class PublishResults:
    publisher: Publisher
    topic_results: str
    topic_dead_letter: str
    retry: Retry

    def __call__(
        self, model_version: str, predicted: Sequence[Predicted], poisoned: Sequence[PoisonInstance]
    ) -> None:
        self.retry("publish_results", lambda: self._publish(model_version, predicted, poisoned))

    def _publish(
        self, model_version: str, predicted: Sequence[Predicted], poisoned: Sequence[PoisonInstance]
    ) -> None:
        for p in predicted:
            e = p.instance.event
            value = messages.instance_result(
                study_instance_uid=e.study_instance_uid,
                series_instance_uid=e.series_instance_uid,
                sop_instance_uid=e.sop_instance_uid,
                model_version=model_version,
                probabilities=p.probabilities.tolist(),
            )
            self.publisher.publish(self.topic_results, e.key, value)
        for poison in poisoned:
            value = messages.dead_letter(
                poison.record,
                reason=poison.error.reason,
                state=poison.error.state,
                sop_instance_uid=poison.event.sop_instance_uid if poison.event else None,
            )
            self.publisher.publish(self.topic_dead_letter, poison.record.key or b"", value)
