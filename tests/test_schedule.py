"""The learning-rate schedule against hand-computed values."""

import math

import pytest

from lib.train.lr_schedule import lr_at

KW = dict(peak=1.0, min_lr=0.1, warmup_steps=9, total_steps=109, decay=True)


def test_warmup_is_linear_from_near_zero():
    assert lr_at(0, **KW) == pytest.approx(0.1)
    assert lr_at(4, **KW) == pytest.approx(0.5)
    assert lr_at(9, **KW) == pytest.approx(1.0)


def test_cosine_reaches_its_midpoint_and_floor():
    assert lr_at(59, **KW) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi / 2)) * 0.9)
    assert lr_at(109, **KW) == pytest.approx(0.1)
    assert lr_at(500, **KW) == pytest.approx(0.1)


def test_without_decay_the_peak_holds():
    assert lr_at(100, **{**KW, "decay": False}) == 1.0
