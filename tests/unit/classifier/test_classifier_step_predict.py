"""The predict step: one model over a batch, each instance handed back its own frames' probabilities."""

from __future__ import annotations

from worker_steps_kit import decoded, metrics, serving

from classifier.worker.predict import ActivePredict, predict
from common.vocabulary import CLASS_NAMES


def test_each_instance_gets_its_own_frames_in_order_across_model_batches() -> None:
    """Frames of several instances are scored together (in batches of 2) and split back per instance."""
    model = serving()
    batch = [
        decoded(1, frames=3, value=0.0),
        decoded(2, frames=1, value=1.0),
        decoded(3, frames=2, value=2.0),
    ]
    predicted = predict(model, batch, batch_size=2)
    assert [p.instance for p in predicted] == batch
    assert [p.probabilities.shape for p in predicted] == [
        (3, len(CLASS_NAMES)),
        (1, len(CLASS_NAMES)),
        (2, len(CLASS_NAMES)),
    ]
    assert [int(p.probabilities.argmax(axis=1)[0]) for p in predicted] == [0, 1, 2]
    assert all(p.shift_scores is None and p.shifted is None for p in predicted)


def test_nothing_to_predict_scores_nothing() -> None:
    """An empty batch (all poison, or all for other versions) never calls the model."""
    assert predict(serving(), [], batch_size=4) == []
    assert ActivePredict(metrics=metrics(), batch_size=4)(serving(), []) == []


def test_the_active_step_predicts_like_any_model() -> None:
    """The active model's step gives what `predict` gives (shadows use `predict` too: one way to predict)."""
    model, batch = serving(), [decoded(1, value=1.0), decoded(2, value=0.0)]
    active = ActivePredict(metrics=metrics(), batch_size=8)(model, batch)
    plain = predict(model, batch, batch_size=8)
    assert [p.probabilities.tolist() for p in active] == [p.probabilities.tolist() for p in plain]
