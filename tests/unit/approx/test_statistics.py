"""Pass statistics, class suppression and the `auto` choice, on a tiny trained prefix.

The statistics a chain stores after training must give the pass computing from the data would
give: bitwise for SSD (the same importance, in the same order), to float precision for IAU
(g_R - g_F derived from g_D), and they must not stand for other data or other weights.
"""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.approx import Examples, PrefixModel, UnlearningInputError
from unlearning.approx.prefix_pass import (
    MethodName,
    RequestShape,
    approximate_stages,
    chain_statistics,
    choose_method,
    examples_of,
)
from unlearning.approx.ssd import SSDConfig, authors_order, importance
from unlearning.approx.statistics import PassStatistics
from unlearning.approx.suppression import removed_classes, suppress_classes
from unlearning.artifacts import LocalArtifactStore
from unlearning.families import Modality
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.s3t.config import Task
from unlearning.s3t.weights import StageWeights

CONFIG = S3TConfig(n_shards=1, n_slices=2, budget=1, n_labels=3, **TINY_SETTINGS)  # type: ignore[arg-type]
WORDS = (("stocks", "market", "shares"), ("match", "goal", "league"), ("chip", "software", "cloud"))
SAMPLES = [
    TrainingSample(
        f"s{i:03d}", 0, i % 2, f"{WORDS[i % 3][i % 3]} {WORDS[i % 3][2 * i % 3]} {i}", i % 3
    )
    for i in range(48)
]
FORGET = SAMPLES[:5]
RETAIN = SAMPLES[5:]


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> list[StageWeights]:
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path_factory.mktemp("stats")))
    layers = engine.train(ModelSpec(CONFIG, ((0, 1),)), SAMPLES)
    return [engine.load_stage(layer.artifact) for layer in sorted(layers, key=lambda x: x.stage)]


def _examples(samples: list[TrainingSample]) -> Examples:
    return examples_of(tiny_backbone(4), CONFIG, samples)


def _pass(
    stages: list[StageWeights],
    method: MethodName,
    statistics: PassStatistics | None,
    forget: list[TrainingSample] = FORGET,
    retain: list[TrainingSample] | None = RETAIN,
) -> list[StageWeights]:
    return approximate_stages(
        tiny_backbone(4),
        CONFIG,
        stages,
        0,
        _examples(forget),
        _examples(retain) if retain is not None else None,
        method,
        statistics=statistics,
    )


def _tensors(stages: list[StageWeights]) -> list[torch.Tensor]:
    return [
        t
        for stage in stages
        for key in sorted(stage.adapters)
        for t in (stage.adapters[key].a, stage.adapters[key].b)
    ] + [stages[-1].head_weight, stages[-1].head_bias]


def _equal(a: list[StageWeights], b: list[StageWeights]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b), strict=True))


def _stored(statistics: PassStatistics) -> PassStatistics:
    """Through the artifact bytes, as the service stores and reads them."""
    return PassStatistics.from_bytes(statistics.to_bytes())


def test_ssd_with_the_stored_statistics_is_bitwise_the_pass_from_the_data(
    stages: list[StageWeights],
) -> None:
    """The pass from data sees the authors' order (retain, then forget); statistics over that
    same order, stored and read back, give the very same bytes without the retain set."""
    statistics = _stored(chain_statistics(tiny_backbone(4), CONFIG, stages, RETAIN + FORGET))
    from_data = _pass(stages, "ssd", None)
    assert _equal(_pass(stages, "ssd", statistics, retain=None), from_data)
    assert not _equal(from_data, stages), "the pass changed something"
    # The importance is SSD's own, entry for entry.
    model = PrefixModel(
        tiny_backbone(4), stages, editable=range(2), target_modules=CONFIG.target_modules
    )
    data = authors_order(_examples(FORGET), _examples(RETAIN))
    reference = importance(model, data, SSDConfig().batch_size)
    assert statistics.importance.keys() == reference.keys()
    assert all(torch.equal(statistics.importance[k], reference[k]) for k in reference)


def test_statistics_of_other_data_or_other_weights_give_another_pass(
    stages: list[StageWeights],
) -> None:
    """What makes the bitwise test able to fail: the data's order decides the batches, and the
    weights decide the gradients."""
    from_data = _pass(stages, "ssd", None)
    shuffled = chain_statistics(tiny_backbone(4), CONFIG, stages, FORGET + RETAIN)
    assert not _equal(_pass(stages, "ssd", shuffled, retain=None), from_data)
    moved = _pass(stages, "gradient_ascent", None)  # the same chain after an edit
    other_weights = chain_statistics(tiny_backbone(4), CONFIG, moved, RETAIN + FORGET)
    assert not _equal(_pass(stages, "ssd", other_weights, retain=None), from_data)


def test_iau_with_the_statistics_matches_the_pass_from_the_data(
    stages: list[StageWeights],
) -> None:
    statistics = _stored(chain_statistics(tiny_backbone(4), CONFIG, stages, RETAIN + FORGET))
    with_statistics = _pass(stages, "iau", statistics, retain=None)
    for a, b in zip(_tensors(with_statistics), _tensors(_pass(stages, "iau", None)), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_statistics_never_stand_for_a_larger_forget_set(stages: list[StageWeights]) -> None:
    statistics = chain_statistics(tiny_backbone(4), CONFIG, stages, FORGET)
    assert statistics.count == len(FORGET)
    with pytest.raises(UnlearningInputError, match="smaller than the cached data"):
        _pass(stages, "ssd", statistics, retain=None)
    with pytest.raises(UnlearningInputError, match="needs the retain set"):
        _pass(stages, "finetune", None, retain=None)


def test_the_stored_bytes_are_a_function_of_the_values(stages: list[StageWeights]) -> None:
    first = chain_statistics(tiny_backbone(4), CONFIG, stages, SAMPLES)
    again = chain_statistics(tiny_backbone(4), CONFIG, stages, SAMPLES)
    assert first.to_bytes() == again.to_bytes()
    assert first.class_counts == {0: 16, 1: 16, 2: 16}
    with pytest.raises(ValueError, match="not a pass-statistics artifact"):
        PassStatistics.from_bytes(stages[0].to_bytes())


def test_suppression_mutes_exactly_the_classes_that_leave(stages: list[StageWeights]) -> None:
    whole = [s for s in SAMPLES if s.target == 1]
    rest = [s for s in SAMPLES if s.target != 1]
    assert removed_classes(_examples(whole), {0: 16, 2: 16}) == [1]
    statistics = chain_statistics(tiny_backbone(4), CONFIG, stages, SAMPLES)
    edited = _pass(stages, "suppress_class", statistics, forget=whole, retain=None)
    assert _equal(edited, _pass(stages, "suppress_class", None, forget=whole, retain=rest))
    model = PrefixModel(tiny_backbone(4), edited, editable=(), target_modules=CONFIG.target_modules)
    with torch.no_grad():
        predicted = model(_examples(SAMPLES).encoded).argmax(dim=1)
    assert 1 not in predicted.tolist() and predicted.numel() == len(SAMPLES)
    # Only the head's row of the class changed.
    assert torch.equal(edited[-1].head_weight[[0, 2]], stages[-1].head_weight[[0, 2]])
    assert all(
        torch.equal(a, b) for a, b in zip(_tensors(edited)[:-2], _tensors(stages)[:-2], strict=True)
    )


def test_suppression_refuses_a_forget_set_that_removes_no_class(
    stages: list[StageWeights],
) -> None:
    model = PrefixModel(
        tiny_backbone(4), stages, editable=(1,), target_modules=CONFIG.target_modules
    )
    with pytest.raises(UnlearningInputError, match="no class leaves"):
        suppress_classes(model, _examples(FORGET), {0: 15, 1: 15, 2: 14})


TEXT = Modality.TEXT


def test_auto_chooses_by_the_request_shape() -> None:
    whole = RequestShape.whole_class
    assert choose_method(whole, Task.CLASSIFICATION, 0.25, TEXT)[0] == "suppress_class"
    assert choose_method(whole, Task.REGRESSION, 0.25, TEXT)[0] == "ssd"
    for shape in (RequestShape.samples, RequestShape.subject):
        method, why = choose_method(shape, Task.CLASSIFICATION, 0.10, TEXT)
        assert method == "ssd" and why.startswith(f"{shape.value}, 10.0% of the samples")


def test_ssd_defaults_follow_the_authors_scripts() -> None:
    """Full-data loader: retain then forget, batches of 64; forget loader: batches of 128."""
    config = SSDConfig()
    assert (config.batch_size, config.forget_batch_size) == (64, 128)
    assert (config.alpha, config.dampening) == (10.0, 1.0)
    joined = authors_order(_examples(FORGET), _examples(RETAIN))
    assert joined.targets is not None
    assert joined.targets.tolist() == [s.target for s in RETAIN + FORGET]


def test_a_head_refit_reads_the_stored_features_and_changes_the_head_only(
    stages: list[StageWeights],
) -> None:
    whole = [s for s in SAMPLES if s.target == 1]
    rest = [s for s in SAMPLES if s.target != 1]
    statistics = _stored(chain_statistics(tiny_backbone(4), CONFIG, stages, rest + whole))
    assert statistics.features.shape == (len(SAMPLES), tiny_backbone(4).hidden_size)
    edited = _pass(stages, "refit_head", statistics, forget=whole, retain=None)
    from_data = _pass(stages, "refit_head", None, forget=whole, retain=rest)
    assert _equal(edited, from_data), "the stored features are what the pass would compute"
    assert all(
        torch.equal(a, b) for a, b in zip(_tensors(edited)[:-2], _tensors(stages)[:-2], strict=True)
    ), "no adapter changed"

    def predicted(chain: list[StageWeights]) -> list[int]:
        model = PrefixModel(
            tiny_backbone(4), chain, editable=(), target_modules=CONFIG.target_modules
        )
        with torch.no_grad():
            return model(_examples(SAMPLES).encoded).argmax(dim=1).tolist()  # type: ignore[no-any-return]

    assert predicted(edited).count(1) < predicted(stages).count(1) / 2, "the class fades"
    with pytest.raises(UnlearningInputError, match="whole classes"):
        _pass(stages, "refit_head", statistics, forget=FORGET, retain=None)
