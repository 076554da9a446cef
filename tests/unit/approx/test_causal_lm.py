"""Approximate passes on a causal LM: a tiny Llama instruction-tuned with S3T (two stages).

Each method that fits a causal LM (gradient ascent, NPO, SSD, IAU) edits only the editable
stage's adapters, and lowers the forget samples' response log-likelihood (measured through
serving's scoring, not through the pass's own loss) by more than the retain samples'. The pass
statistics stand for the retain set on a causal LM as they do on a classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from tests.tiny_models import TINY_SETTINGS
from unlearning.approx import Examples, PrefixModel, UnlearningInputError, registry
from unlearning.approx.data import sample_logprob, task_loss
from unlearning.approx.gradient_ascent import GradientAscentConfig, gradient_ascent
from unlearning.approx.npo import NPOConfig, npo, npo_loss
from unlearning.approx.prefix_pass import (
    RequestShape,
    approximate_stages,
    chain_statistics,
    choose_method,
    examples_of,
)
from unlearning.approx.registry import PassData
from unlearning.approx.statistics import PassStatistics
from unlearning.artifacts import LocalArtifactStore
from unlearning.families import Conversation, Modality
from unlearning.families.testing import save_tiny_model
from unlearning.s3t import Backbone, ModelSpec, S3TConfig, S3TEngine, TrainingSample, load_backbone
from unlearning.s3t.config import Task
from unlearning.s3t.data import IGNORE
from unlearning.s3t.ensemble import EnsemblePredictor, ServedShard
from unlearning.s3t.generation import LmEnsemble
from unlearning.s3t.training import lm_loss
from unlearning.s3t.weights import StageWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = (
    ("stocks", "market", "profit", "bank"),
    ("match", "goal", "team", "season"),
    ("chip", "software", "space", "laptop"),
)
SAMPLES = [
    TrainingSample(
        f"s{i:03d}",
        0,
        i % 2,
        Conversation.pair(f"tell me about {WORDS[i % 3][i % 4]}", f"{WORDS[i % 3][i * 3 % 4]} {i}"),
    )
    for i in range(24)
]
FORGET, RETAIN = SAMPLES[:4], SAMPLES[4:]
#: The methods LLM users compare, each with its defaults.
LLM_METHODS = ("gradient_ascent", "npo", "ssd", "iau")


@dataclass(frozen=True)
class Trained:
    backbone: Backbone
    config: S3TConfig
    stages: list[StageWeights]

    def examples(self, samples: list[TrainingSample]) -> Examples:
        return examples_of(self.backbone, self.config, samples)

    def model(self, editable: tuple[int, ...] = (1,)) -> PrefixModel:
        return PrefixModel(
            self.backbone,
            self.stages,
            editable=editable,
            target_modules=self.config.target_modules,
        )

    def loglik(self, stages: list[StageWeights], samples: list[TrainingSample]) -> torch.Tensor:
        """Each sample's response log-likelihood after its prompt, as serving scores it."""
        predictor = EnsemblePredictor(self.backbone, self.config.target_modules)
        lm = LmEnsemble(self.backbone, predictor, [ServedShard.from_prefix(stages)])
        chats = [s.content for s in samples]
        assert all(isinstance(c, Conversation) for c in chats)
        prompts = [Conversation((c.messages[0],)) for c in chats]  # type: ignore[union-attr]
        responses = [c.messages[1][1] for c in chats]  # type: ignore[union-attr]
        return torch.tensor([s.total for s in lm.score(prompts, responses)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("approx-lm")
    backbone = load_backbone(save_tiny_model("llama", root / "llama", n_layers=2))
    settings: dict[str, Any] = {**TINY_SETTINGS, "max_length": 32}
    settings |= {"epochs_per_stage": 6, "learning_rate": 2e-2}
    config = S3TConfig(
        n_shards=1,
        n_slices=2,
        budget=1,
        task=Task.CAUSAL_LM,
        n_labels=1,
        target_modules=backbone.family.default_targets,
        **settings,
    )
    engine = S3TEngine(backbone, LocalArtifactStore(root / "store"))
    layers = sorted(engine.train(ModelSpec(config, ((0, 1),)), SAMPLES), key=lambda x: x.stage)
    return Trained(backbone, config, [engine.load_stage(layer.artifact) for layer in layers])


def _tensors(stage: StageWeights) -> list[torch.Tensor]:
    pairs = [stage.adapters[key] for key in sorted(stage.adapters)]
    return [t for pair in pairs for t in (pair.a, pair.b)] + [stage.head_weight, stage.head_bias]


def _same(a: StageWeights, b: StageWeights) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b), strict=True))


def test_a_causal_lm_prefix_trains_its_adapters_only_and_scores_by_response_tokens(
    trained: Trained,
) -> None:
    model = trained.model(editable=(0, 1))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("lora.") for name in trainable)
    assert model.head.weight.numel() == 0  # the frozen LM head serves; no trained head
    for before, after in zip(trained.stages, model.export(), strict=True):
        assert _same(before, after)
    forget = trained.examples(FORGET)
    assert forget.causal_lm and not forget.classification
    assert forget.targets is not None and forget.encoded.loss_mask is not None
    # Only response tokens are labelled: the prompt's positions are IGNORE.
    labelled = forget.targets != IGNORE
    response = forget.encoded.loss_mask[:, 1:].bool() & forget.encoded.attention_mask[:, 1:].bool()
    assert torch.equal(labelled[:, :-1], response) and not labelled[:, -1].any()
    assert 0 < 2 * int(labelled.sum()) < int(forget.encoded.attention_mask.sum())  # prompt-heavy
    with torch.no_grad():
        logits = model(forget.encoded)
        assert logits.shape == (*forget.encoded.inputs.shape, trained.backbone.model.vocab_size)
        # The pass's loss is the trainer's LM loss; a sample's likelihood sums its tokens'.
        loss = task_loss(logits, forget.targets)
        assert torch.equal(loss, lm_loss(logits, forget.targets))
        total = -sample_logprob(logits, forget.targets).sum() / labelled.sum()
        assert torch.allclose(loss, total, atol=1e-5)
    # Joined sets keep their loss masks (a retain term batches both).
    joined = Examples.join(forget, trained.examples(RETAIN))
    assert joined.encoded.loss_mask is not None and len(joined) == len(SAMPLES)


@pytest.mark.parametrize("method", LLM_METHODS)
def test_a_pass_lowers_the_forget_likelihood_more_than_the_retain_and_edits_only_its_stage(
    trained: Trained, method: str
) -> None:
    spec = registry.get(method)
    assert spec.unfit(Task.CAUSAL_LM, Modality.TEXT) is None
    model = trained.model(editable=(1,))
    data = PassData(trained.examples(FORGET), trained.examples(RETAIN), None, 1)
    spec.run(model, data, spec.configure())
    first, second = model.export()
    assert _same(first, trained.stages[0]), "a stage below the editable one changed"
    assert not _same(second, trained.stages[1]), "the editable stage did not change"
    assert second.head_weight.numel() == 0 and second.head_bias.numel() == 0
    edited = [first, second]
    forget = trained.loglik(edited, FORGET) - trained.loglik(trained.stages, FORGET)
    retain = trained.loglik(edited, RETAIN) - trained.loglik(trained.stages, RETAIN)
    assert float(forget.mean()) < 0, (method, forget)
    assert float(forget.mean()) < float(retain.mean()), (method, forget, retain)


def test_npo_loss_is_the_papers() -> None:
    beta = 0.1
    current = torch.tensor([-3.0, -5.0, -1.0], requires_grad=True)
    reference = torch.tensor([-3.0, -4.0, -2.0])
    loss = npo_loss(current, reference, beta)
    ratio = (current - reference).detach()
    expected = -(2 / beta) * torch.log(torch.sigmoid(-beta * ratio)).mean()
    assert torch.allclose(loss, expected)
    # At the reference, NPO is gradient ascent: d/d(log p) = 1/n per sample.
    at_reference = npo_loss(reference.clone().requires_grad_(True), reference, beta)
    assert float(at_reference.detach()) == pytest.approx(2 / beta * math.log(2))
    loss.backward()  # type: ignore[no-untyped-call]
    assert current.grad is not None
    weights = torch.sigmoid(beta * ratio) * 2 / len(ratio)
    assert torch.allclose(current.grad, weights)  # below the reference, the weight fades


def test_the_loops_are_bounded_and_take_a_retain_term(trained: Trained) -> None:
    forget, retain = trained.examples(FORGET), trained.examples(RETAIN)
    bounded = GradientAscentConfig(epochs=3, batch_size=1, max_steps=5)
    assert gradient_ascent(trained.model(), forget, bounded).steps == 5
    assert gradient_ascent(trained.model(), forget, GradientAscentConfig(epochs=3)).steps == 3
    assert npo(trained.model(), forget, NPOConfig(epochs=2, batch_size=2)).steps == 4
    with pytest.raises(UnlearningInputError, match="retain set"):
        gradient_ascent(trained.model(), forget, GradientAscentConfig(retain_weight=1.0))
    # GradDiff through the registry: the retain term keeps the retain set closer to before.
    plain = approximate_stages(
        trained.backbone, trained.config, trained.stages, 1, forget, retain, "gradient_ascent",
        method_config=GradientAscentConfig(epochs=5),
    )  # fmt: skip
    graddiff = approximate_stages(
        trained.backbone, trained.config, trained.stages, 1, forget, retain, "gradient_ascent",
        method_config=GradientAscentConfig(epochs=5, retain_weight=1.0),
    )  # fmt: skip
    before = trained.loglik(trained.stages, RETAIN).mean()
    kept = trained.loglik([trained.stages[0], *graddiff], RETAIN).mean() - before
    lost = trained.loglik([trained.stages[0], *plain], RETAIN).mean() - before
    assert float(kept) > float(lost)
    for name in ("max_steps", "retain_weight", "epochs"):
        with pytest.raises(ValueError, match=name):
            GradientAscentConfig(**{name: -1})
    with pytest.raises(ValueError, match="beta"):
        NPOConfig(beta=0)


def test_the_stored_statistics_stand_for_the_retain_set_of_a_causal_lm(
    trained: Trained,
) -> None:
    backbone, config, stages = trained.backbone, trained.config, trained.stages
    statistics = chain_statistics(backbone, config, stages, RETAIN + FORGET)
    statistics = PassStatistics.from_bytes(statistics.to_bytes())  # as the service stores them
    assert statistics.features.shape == (len(SAMPLES), 0) and statistics.class_counts == {}
    assert all(name.startswith("lora.") for name in statistics.importance)
    forget, retain = trained.examples(FORGET), trained.examples(RETAIN)
    for method in ("ssd", "iau"):
        from_data = approximate_stages(backbone, config, stages, 1, forget, retain, method)
        cached = approximate_stages(
            backbone, config, stages, 1, forget, None, method, statistics=statistics
        )
        for a, b in zip(_tensors(from_data[0]), _tensors(cached[0]), strict=True):
            assert torch.allclose(a, b, atol=1e-6), method
        assert not _same(cached[0], stages[1])


def test_what_fits_a_causal_lm_and_why_the_others_do_not() -> None:
    fits = {s.name for s in registry.specs() if s.unfit(Task.CAUSAL_LM, Modality.TEXT) is None}
    assert set(LLM_METHODS) <= fits
    assert {"random_labels", "salun", "laf", "suppress_class", "blindspot"}.isdisjoint(fits)
    assert registry.get("salun").unfit(Task.CAUSAL_LM, Modality.TEXT) == (
        "`salun` does not fit a causal_lm model: it needs class labels, which a causal_lm model "
        "has not"
    )
    assert "pooled representation" in str(registry.get("laf").unfit(Task.CAUSAL_LM, Modality.TEXT))
    # NPO needs a likelihood: a class's or a response's, not a regressor's.
    assert registry.get("npo").unfit(Task.CLASSIFICATION, Modality.TEXT) is None
    assert "likelihood" in str(registry.get("npo").unfit(Task.REGRESSION, Modality.TEXT))
    for shape in RequestShape:
        assert choose_method(shape, Task.CAUSAL_LM, 0.05, Modality.TEXT)[0] == "ssd"
