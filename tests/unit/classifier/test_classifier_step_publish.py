"""The publish step: a result per written instance, a dead letter per poison event, through outages."""

from __future__ import annotations

import json
import threading

import numpy as np
from worker_steps_kit import decoded, metrics, record

from classifier.worker.decoding import PoisonInstance
from classifier.worker.errors import DecodeError
from classifier.worker.predict import Predicted
from classifier.worker.publish import PublishResults
from classifier.worker.retrying import Retry
from storage.failures import Backoff
from storage.stream.contract import StreamUnavailable


class Publisher:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes, bytes]] = []

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise StreamUnavailable("not acknowledged")
        self.sent.append((topic, key, value))

    def close(self) -> None:
        pass


def test_results_and_dead_letters_go_to_their_topics_after_an_outage() -> None:
    """A broker that does not acknowledge is waited out (counted as a retry); then everything is sent."""
    publisher, m = Publisher(failures=1), metrics()
    retry = Retry(stop=threading.Event(), backoff=Backoff(0.01, 0.01), metrics=m)
    step = PublishResults(publisher=publisher, topic_results="results", topic_dead_letter="dlq", retry=retry)
    d = decoded(1)
    poison = PoisonInstance(record(9, b"junk"), None, DecodeError("bad pixels"))
    step("v1", [Predicted(d, np.array([[0.1, 0.7, 0.1, 0.1]]))], [poison])
    assert [(t, k) for t, k, _ in publisher.sent] == [("results", d.event.key), ("dlq", b"k")]
    result, letter = (json.loads(v) for _, _, v in publisher.sent)
    assert result["sop_instance_uid"] == d.event.sop_instance_uid and result["model_version"] == "v1"
    assert letter["source"]["offset"] == 9 and letter["state"] == "failed"
    assert (
        m.registry.get_sample_value("kidneyct_worker_dependency_retries_total", {"action": "publish_results"})
        == 1
    )
