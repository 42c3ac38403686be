"""The PyDataset input pipeline, augmentation and class weights."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import AugmentConfig, Augmenter, ImageSequence
from training.fit import class_weights


def _images(n: int = 10, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (n, size, size, 1)).astype(np.float32)


def test_batches_are_three_equal_channels_and_one_hot_labels() -> None:
    """Without augmentation a batch is the stored grey levels repeated into three channels."""
    images, labels = _images(), np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    seq = ImageSequence(images, labels, num_classes=4, batch_size=4, shuffle=False, seed=0)
    assert len(seq) == 3
    x, y = seq[2]
    assert x.shape == (2, 16, 16, 3) and y.shape == (2, 4)
    np.testing.assert_array_equal(x[..., 0], images[8:, ..., 0])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    np.testing.assert_array_equal(y.argmax(axis=1), labels[8:])


def test_class_weight_gives_each_image_its_class_weight() -> None:
    """A weighted sequence (the validation set) yields the training loss's weight per image, in batch order."""
    images, labels = _images(), np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 3])
    weights = class_weights(labels, 4)
    seq = ImageSequence(
        images, labels, num_classes=4, batch_size=4, shuffle=True, seed=3, class_weight=weights
    )
    seen = []
    for i in range(len(seq)):
        _, y, w = seq[i]
        np.testing.assert_allclose(w, [weights[int(c)] for c in y.argmax(axis=1)])
        seen += list(w)
    np.testing.assert_allclose(sorted(seen), sorted(weights[int(c)] for c in labels))
    assert weights[0] < weights[3]  # the rare class weighs more


def test_shuffling_is_seeded_and_covers_every_image() -> None:
    """The same seed gives the same order; each epoch visits every image once, in a new order."""
    images, labels = _images(), np.arange(10) % 4

    def epoch_labels(seq: ImageSequence) -> list[float]:
        return [float(v) for i in range(len(seq)) for v in seq[i][0][:, 0, 0, 0]]

    a = ImageSequence(images, labels, num_classes=4, batch_size=3, shuffle=True, seed=5)
    b = ImageSequence(images, labels, num_classes=4, batch_size=3, shuffle=True, seed=5)
    first = epoch_labels(a)
    assert first == epoch_labels(b)
    assert sorted(first) == sorted(float(v) for v in images[:, 0, 0, 0])
    a.on_epoch_end()
    assert epoch_labels(a) != first


def test_augmentation_stays_grey_in_range_and_changes_pixels() -> None:
    """Augmented batches keep [0, 255], keep three equal channels, and differ from the input."""
    images = _images(8, 32)
    seq = ImageSequence(
        images,
        np.zeros(8, int),
        num_classes=4,
        batch_size=8,
        shuffle=False,
        seed=0,
        augmenter=Augmenter(AugmentConfig(), seed=1),
    )
    x, _ = seq[0]
    assert x.min() >= 0.0 and x.max() <= 255.0
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    assert not np.allclose(x[..., 0], images[..., 0])


def _augmented(seed: int = 1, shuffle: bool = True) -> ImageSequence:
    return ImageSequence(
        _images(8, 32),
        np.arange(8) % 4,
        num_classes=4,
        batch_size=3,
        shuffle=shuffle,
        seed=seed,
        augmenter=Augmenter(AugmentConfig(), seed=seed),
    )


def test_a_batch_is_the_same_whatever_order_it_is_asked_for_in() -> None:
    """A batch's order and jitter depend on (seed, epoch, index) only: asking again, or out of order, gives the same pixels."""
    a, b = _augmented(), _augmented()
    in_order = [a[i][0] for i in range(len(a))]
    backwards = [b[i][0] for i in reversed(range(len(b)))][::-1]
    for x, y in zip(in_order, backwards, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[1][0], in_order[1])  # asked twice (as the BatchNorm recalibration does)


def test_each_epoch_gets_new_but_reproducible_jitter() -> None:
    """Epoch 2 differs from epoch 1; a second sequence with the same seed repeats both; another seed differs."""
    a, b, other = _augmented(), _augmented(), _augmented(seed=2)
    first = a[0][0]
    a.on_epoch_end()
    b.on_epoch_end()
    second = a[0][0]
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(second, b[0][0])
    assert not np.allclose(first, other[0][0])


def test_wrong_shapes_are_refused() -> None:
    """Three-channel storage, mismatched labels and empty sets raise ValueError."""
    with pytest.raises(ValueError, match=r"\[N, S, S, 1\]"):
        ImageSequence(np.zeros((2, 8, 8, 3)), np.zeros(2), num_classes=4, batch_size=1, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="same length"):
        ImageSequence(np.zeros((2, 8, 8, 1)), np.zeros(3), num_classes=4, batch_size=1, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="no images"):
        ImageSequence(np.zeros((0, 8, 8, 1)), np.zeros(0), num_classes=4, batch_size=1, shuffle=False, seed=0)


def test_class_weights_balance_the_loss() -> None:
    """Weights are n / (k n_c): a class with a third of the examples weighs three times more."""
    weights = class_weights([0, 0, 0, 1, 1, 1, 2], 4)
    assert weights[0] == pytest.approx(7 / (3 * 3))
    assert weights[2] == pytest.approx(7 / 3)
    assert weights[3] == 1.0  # absent from training: no weight to balance
    counts = np.bincount([0, 0, 0, 1, 1, 1, 2], minlength=3)
    assert sum(weights[c] * counts[c] for c in range(3)) == pytest.approx(7)
