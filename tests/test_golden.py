"""Golden numbers (tests/golden.py): every combination reproduces its pinned losses, sparsity and mask,
and a mutated score function, or mutated moments handed to one, moves them."""

import base64
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from lib.adamwprune.variants import VARIANTS as ADAMWPRUNE_VARIANTS
from lib.pruning import build as pruning
from lib.pruning import pruner as pruner_module

from . import golden
from .conftest import GOLDEN_REPRODUCTION


@pytest.fixture(scope="module")
def pinned() -> dict:
    return golden.load_golden()


def test_golden_file_covers_every_combination(pinned):
    assert list(pinned) == [golden.key(*c) for c in golden.COMBINATIONS]
    bases = {c[3] for c in golden.COMBINATIONS if c[0] == "adamwprune"}
    variants = {c[2] for c in golden.COMBINATIONS if c[0] == "adamwprune"}
    assert variants == set(ADAMWPRUNE_VARIANTS) and bases == {"adamw", "adamwspam"}
    for numbers in pinned.values():  # each run really pruned (or really stayed dense)
        assert numbers["sparsity"] in (None, 0.5)


def _perturbed(score):
    """The score times a fixed, weight-dependent factor in [0.5, 1.5]: it ranks weights differently."""
    return lambda w, m, v: score(w, m, v) * (1.0 + 0.5 * torch.sin(1000.0 * w))


def _zero_first_moment(score):
    return lambda w, m, v: score(w, torch.zeros_like(m), v)


def _unit_second_moment(score):
    return lambda w, m, v: score(w, m, torch.ones_like(v))


def _variant_mutation(name: str, mutate):
    def apply(monkeypatch):
        v = ADAMWPRUNE_VARIANTS[name]
        monkeypatch.setitem(ADAMWPRUNE_VARIANTS, name, dataclasses.replace(v, score=mutate(v.score)))

    return apply


def _magnitude_mutation(monkeypatch):
    monkeypatch.setattr(pruning, "magnitude_score", _perturbed(pruning.magnitude_score))


def _movement_sign_flip(monkeypatch):
    real = pruner_module.accumulate_movement_

    def flipped(scores, grads, weights, found_inf=None):
        real(scores, [-g for g in grads], weights, found_inf)  # scores += g * w: the sign reversed

    monkeypatch.setattr(pruner_module, "accumulate_movement_", flipped)


# (what is mutated, how, the combination whose golden numbers must move)
MUTATIONS = [
    ("magnitude score", _magnitude_mutation, ("adamw", "magnitude", None, None)),
    ("movement score's sign", _movement_sign_flip, ("adamwspam", "movement", None, None)),
    *[
        (f"{name} score", _variant_mutation(name, _perturbed), ("adamwprune", "state", name, "adamw"))
        for name in ADAMWPRUNE_VARIANTS
    ],
    *[
        (f"{name}'s {what} on {base}", _variant_mutation(name, mutate), ("adamwprune", "state", name, base))
        for name, variant in ADAMWPRUNE_VARIANTS.items()
        if variant.needs_state
        for what, mutate in (
            ("first moment (zeros)", _zero_first_moment),
            ("second moment (ones)", _unit_second_moment),
        )
        for base in ("adamw", "adamwspam")
    ],
]


# The mutation runs stop after their first mask (the ramp ending at step 8), and compare with the
# unmutated code run the same way in this process: the same numerics, so what moves is the
# mutation's doing on any CPU.
SHORT = ("--max-iters", "9", "--set", "PRUNING_RAMP_END=8")


@pytest.fixture(scope="module")
def unmutated(tmp_path_factory, data_dir):
    runs = {}

    def get(combination):
        if combination not in runs:
            workdir = tmp_path_factory.mktemp("unmutated")
            runs[combination] = golden.run(combination, data_dir, workdir, SHORT)
        return runs[combination]

    return get


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m[0])
def test_a_mutated_score_or_its_moments_moves_the_golden_numbers(
    mutation, unmutated, data_dir, tmp_path, monkeypatch
):
    _, apply, combination = mutation
    reference = unmutated(combination)
    assert reference["sparsity"] > 0  # the short run has pruned
    apply(monkeypatch)
    mutated = golden.run(combination, data_dir, tmp_path, SHORT)
    moved = golden.differences(mutated, reference)
    assert any(d.startswith("mask") for d in moved), moved
    # ... and on another machine's numerics, where the masks are compared on their sample, too.
    assert golden.sample_distance(mutated["mask_sample"], reference["mask_sample"]) > 2 * golden.SAMPLE_TOL


def test_the_looser_tier_is_only_for_other_numerics_and_still_sees_a_moved_mask(pinned):
    import copy
    import math

    dense = golden.key("adamw", "none", None, None)
    assert golden.same_numerics(pinned, pinned)
    other = copy.deepcopy(pinned)
    other[dense]["train_loss"][0] = math.nextafter(other[dense]["train_loss"][0], math.inf)  # one ulp
    assert not golden.same_numerics(other, pinned)
    k = golden.key("adamw", "magnitude", None, None)
    assert golden.differences(pinned[k], pinned[k], exact=False) == []
    bits = np.unpackbits(np.frombuffer(base64.b64decode(pinned[k]["mask_sample"]), dtype=np.uint8))
    for flipped, moved in ((int(0.01 * bits.size), False), (int(0.03 * bits.size), True)):
        b = bits.copy()
        b[:flipped] ^= 1
        got = {**pinned[k], "mask_sample": base64.b64encode(np.packbits(b).tobytes()).decode()}
        assert any(d.startswith("mask") for d in golden.differences(got, pinned[k], exact=False)) == moved


# Last in this file: the reproduction started after collection runs meanwhile.
@pytest.fixture(scope="module")
def reproduced(request, shakespeare_source) -> dict:
    """Every combination trained again, once, by `python -m tests.golden` in its pinned numerical
    environment: the process conftest.py started after collection, or one started now."""
    reproduction = request.config.stash.get(GOLDEN_REPRODUCTION, None)
    if reproduction is None:
        reproduction = golden.Reproduction(shakespeare_source)
    code, numbers, stderr = reproduction.result()
    if code == 2 and stderr.startswith("error: the golden numbers"):
        pytest.skip(stderr.strip())
    assert numbers is not None, f"python -m tests.golden wrote no numbers (exit {code}):\n{stderr}"
    return numbers


@pytest.mark.parametrize("combination", golden.COMBINATIONS, ids=lambda c: golden.key(*c))
def test_combination_reproduces_its_golden_numbers(combination, pinned, reproduced):
    k = golden.key(*combination)
    exact = golden.same_numerics(reproduced, pinned)
    if not exact:
        warnings.warn(
            "this machine's numerics differ from the pinning machine's (the dense AdamW run is not bit for "
            "bit the pinned one): masks compared on a sample, losses to 2%",
            stacklevel=1,
        )
    assert golden.differences(reproduced[k], pinned[k], exact) == []
