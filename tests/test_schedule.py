"""The learning-rate schedule against hand-computed values."""

import math

import pytest

from lib.train.lr_schedule import learning_rate_at
from lib.train.settings import TrainingSettings

TRAINING = TrainingSettings(learning_rate=0.5, min_lr=0.05, lr_warmup_steps=9, decay_lr=True)
TOTAL = 109


def test_warmup_is_linear_from_near_zero():
    assert learning_rate_at(0, TRAINING, TOTAL) == pytest.approx(0.05)
    assert learning_rate_at(4, TRAINING, TOTAL) == pytest.approx(0.25)
    assert learning_rate_at(9, TRAINING, TOTAL) == pytest.approx(0.5)


def test_cosine_reaches_its_midpoint_and_floor():
    assert learning_rate_at(59, TRAINING, TOTAL) == pytest.approx(
        0.05 + 0.5 * (1 + math.cos(math.pi / 2)) * 0.45
    )
    assert learning_rate_at(109, TRAINING, TOTAL) == pytest.approx(0.05)
    assert learning_rate_at(500, TRAINING, TOTAL) == pytest.approx(0.05)


def test_without_decay_the_learning_rate_holds():
    constant = TrainingSettings(learning_rate=0.5, min_lr=0.05, lr_warmup_steps=9, decay_lr=False)
    assert learning_rate_at(100, constant, TOTAL) == 0.5
