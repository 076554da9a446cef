"""A pass broken on purpose gets a bad grade against its exact retrain, and `auto` stops choosing
it for the model, while a good pass (IAU) keeps being chosen: grades computed from real passes
and a real retrain on a tiny model. (The service does not record grades yet: this is the
library's half.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.approx.graded_choice import MethodRecord, choose_by_grades
from unlearning.approx.prefix_pass import (
    RequestShape,
    approximate_stages,
    auto_candidates,
    examples_of,
)
from unlearning.artifacts import LocalArtifactStore
from unlearning.evaluation.grading import Outputs, PassGrade, grade_pass
from unlearning.families import Modality
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.s3t.config import Task
from unlearning.s3t.weights import StageWeights

SETTINGS = {**TINY_SETTINGS, "epochs_per_stage": 15, "learning_rate": 2e-2}  # it learns the words
CONFIG = S3TConfig(n_shards=1, n_slices=2, budget=2, n_labels=2, **SETTINGS)  # type: ignore[arg-type]
SPEC = ModelSpec(CONFIG, ((0, 1),))
WORDS = (("good", "fine", "great"), ("bad", "poor", "awful"))
SAMPLES = [
    TrainingSample(f"s{i:03d}", 0, i % 2, f"{WORDS[i % 2][i % 3]} thing {i}", i % 2)
    for i in range(32)
]
FORGET, RETAIN = SAMPLES[:6], SAMPLES[6:]
EVAL = [(f"{WORDS[i % 2][(i + 1) % 3]} item {100 + i}", i % 2) for i in range(40)]


def _broken(stages: list[StageWeights]) -> list[StageWeights]:
    """A method broken on purpose: it flips the head's answer."""
    return [
        dataclasses.replace(s, head_weight=-s.head_weight, head_bias=-s.head_bias) for s in stages
    ]


@pytest.fixture(scope="module")
def grades(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PassGrade]:
    torch.manual_seed(0)
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path_factory.mktemp("graded")))
    trained = sorted(engine.train(SPEC, SAMPLES), key=lambda t: t.stage)
    exact = sorted(engine.train(SPEC, RETAIN), key=lambda t: t.stage)  # the exact retrain
    stages = [engine.load_stage(t.artifact) for t in trained]
    backbone = engine.backbone
    forget, retain = examples_of(backbone, CONFIG, FORGET), examples_of(backbone, CONFIG, RETAIN)
    edited = approximate_stages(backbone, CONFIG, stages, 0, forget, retain, "iau")

    def outputs(refs: list[str]) -> Outputs:
        def logits(texts: list[str]) -> np.ndarray:
            return engine.predict(CONFIG, texts, {0: refs}).outputs.numpy()

        return Outputs(logits([t for t, _ in EVAL]), logits([str(s.content) for s in FORGET]))

    def stored(weights: list[StageWeights]) -> list[str]:
        return [engine.store.put(w.to_bytes()) for w in weights]

    reference = outputs([t.artifact for t in exact])
    labels = np.array([y for _, y in EVAL])
    forget_labels = np.array([s.target for s in FORGET])
    return {
        name: grade_pass(
            outputs(stored(weights)),
            reference,
            eval_labels=labels,
            forget_labels=forget_labels,
            references=[reference],
        )
        for name, weights in (("iau", edited), ("broken", _broken(edited)))
    }


def test_the_broken_pass_gets_a_bad_grade_and_auto_stops_choosing_it(
    grades: dict[str, PassGrade],
) -> None:
    good, bad = grades["iau"], grades["broken"]
    assert good.gap < 5.0 < bad.gap
    assert good.kl < bad.kl and good.agreement > bad.agreement
    # The rule prefers the broken method (first, where SSD stands); three bad grades later
    # `auto` runs the good one on this model, and keeps running it.
    rule = [
        ("broken", "the rule's first choice"),
        *auto_candidates(RequestShape.samples, Task.CLASSIFICATION, 0.2, Modality.TEXT),
    ]
    assert choose_by_grades(rule, {})[0] == "broken"
    records = {
        "broken": MethodRecord("broken", 3, bad.gap, 0.02),
        "iau": MethodRecord("iau", 3, good.gap, 0.03),
    }
    method, why = choose_by_grades(rule, records)
    assert method == "iau" and "broken no longer chosen" in why
    more = {**records, "iau": MethodRecord("iau", 10, good.gap, 0.03)}
    assert choose_by_grades(rule, more)[0] == "iau"
