"""Every registered method on every architecture family: on a tiny trained S3T prefix of each
family (texts for the encoders, real digit images for ViT and DeiT, instruction pairs for the
decoders, which serve causal_lm only), a method the registry says fits runs by name, returns
finite weights and moves the forget set's outputs (a decoder's next-token logits); a method it
says does not fit is refused, before any computation, with the registry's reason. ``auto``
chooses only methods that fit the base model's modality and task.

The pairs come from the registry's declarations, so a method restricted to one modality turns
its pairs on the other into refusal cases by itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny_models import TINY_SETTINGS
from unlearning.approx import UnlearningInputError, registry
from unlearning.approx.model import PrefixModel
from unlearning.approx.prefix_pass import (
    RequestShape,
    approximate_stages,
    choose_method,
    examples_of,
    unfit,
)
from unlearning.approx.registry import MethodSpec
from unlearning.artifacts import LocalArtifactStore
from unlearning.families import FAMILIES, Conversation, Encoded, Modality
from unlearning.families.testing import digit_images, save_tiny_model
from unlearning.s3t import (
    Backbone,
    ModelSpec,
    S3TConfig,
    S3TEngine,
    TrainingSample,
    load_backbone,
)
from unlearning.s3t.config import Task
from unlearning.s3t.ensemble import EnsemblePredictor, ServedShard
from unlearning.s3t.generation import LmEnsemble
from unlearning.s3t.weights import StageWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = {
    0: ["stocks", "market", "profit", "bank"],
    1: ["match", "goal", "team", "season"],
    2: ["chip", "software", "space", "laptop"],
}
N_SAMPLES = 24
#: Each method's pairs: the families whose modality it declares, then those it refuses.
PAIRS = [(spec.name, family.name) for spec in registry.specs() for family in FAMILIES]
#: The tiny model standing for a family (transformers reads a ``qwen2`` folder's tokenizer as
#: Qwen2's byte-level BPE, which garbles the shared WordPiece vocabulary; Qwen3 is served by the
#: same family).
TINY = {"qwen2": "qwen3"}


def _task(spec: MethodSpec[Any], causal: bool) -> Task:
    """A decoder serves causal_lm only; an encoder the method's first task."""
    if causal:
        return Task.CAUSAL_LM
    return Task.CLASSIFICATION if Task.CLASSIFICATION in spec.tasks else Task.REGRESSION


def _samples(modality: Modality, task: Task) -> list[TrainingSample]:
    """Three classes (or their index as a value): digits modulo 3 for images, words of three
    topics for texts, instruction pairs on them for a causal LM; two slices of one shard."""
    images = digit_images(N_SAMPLES) if modality == Modality.IMAGE else []
    samples = []
    for i in range(N_SAMPLES):
        label = images[i][1] % 3 if images else i % 3
        if task == Task.CAUSAL_LM:
            words = WORDS[label]
            pair = Conversation.pair(f"tell me about {words[i % 4]}", f"{words[(i * 3) % 4]} {i}")
            samples.append(TrainingSample(f"s{i:03d}", 0, i % 2, pair))
            continue
        content: str | bytes = (
            images[i][0] if images else f"{WORDS[label][i % 4]} {WORDS[label][(i * 3) % 4]} {i}"
        )
        samples.append(TrainingSample(f"s{i:03d}", 0, i % 2, content, float(label)))
    return samples


@dataclasses.dataclass(frozen=True)
class Trained:
    backbone: Backbone
    config: S3TConfig
    samples: list[TrainingSample]
    prefix: list[StageWeights]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Task], Trained]:
    """A tiny model of a family (2 layers: one per slice) with a 2-stage prefix trained on its
    samples, per family and task, built when first asked for."""
    root = tmp_path_factory.mktemp("approx-families")
    backbones: dict[str, Backbone] = {}
    prefixes: dict[tuple[str, Task], Trained] = {}

    def get(family: str, task: Task) -> Trained:
        if family not in backbones:
            folder = save_tiny_model(TINY.get(family, family), root / family, n_layers=2)
            backbones[family] = load_backbone(folder)
        if (family, task) not in prefixes:
            backbone = backbones[family]
            # A decoder's instruction template takes a dozen tokens before the response starts.
            length = 32 if task == Task.CAUSAL_LM else TINY_SETTINGS["max_length"]
            config = S3TConfig(
                n_shards=1,
                n_slices=2,
                budget=1,
                task=task,
                n_labels=3 if task == Task.CLASSIFICATION else 1,
                target_modules=backbone.family.default_targets,
                **{**TINY_SETTINGS, "max_length": length},  # type: ignore[arg-type]
            )
            samples = _samples(backbone.modality, task)
            engine = S3TEngine(backbone, LocalArtifactStore(Path(root / f"{family}-{task}")))
            layers = sorted(engine.train(ModelSpec(config, ((0, 1),)), samples), key=_stage)
            prefix = [engine.load_stage(layer.artifact) for layer in layers]
            prefixes[(family, task)] = Trained(backbone, config, samples, prefix)
        return prefixes[(family, task)]

    return get


def _stage(layer: Any) -> int:
    return int(layer.stage)


def _forget(spec: MethodSpec[Any], samples: list[TrainingSample]) -> list[TrainingSample]:
    if spec.forgets == "classes":  # class unlearning: some samples of one class
        return [s for s in samples if s.target == 0][:4]
    if spec.forgets == "whole_classes":  # every sample of the class
        return [s for s in samples if s.target == 0]
    return samples[:4]


def _outputs(run: Trained, stages: list[StageWeights], inputs: Encoded) -> torch.Tensor:
    model = PrefixModel(run.backbone, stages, editable=(), target_modules=run.config.target_modules)
    with torch.no_grad():
        outputs: torch.Tensor = model(inputs)
    return outputs


@pytest.mark.parametrize(("method", "family"), PAIRS, ids=[f"{m}-{f}" for m, f in PAIRS])
def test_a_method_runs_on_every_family_it_declares_and_is_refused_on_the_others(
    trained: Callable[[str, Task], Trained], method: str, family: str
) -> None:
    spec = registry.get(method)
    base = next(f for f in FAMILIES if f.name == family)
    task, modality = _task(spec, base.causal), base.modality
    run = trained(family, task)
    assert run.backbone.modality == modality
    forget_samples = _forget(spec, run.samples)
    retain_samples = [s for s in run.samples if s not in forget_samples]
    forget = examples_of(run.backbone, run.config, forget_samples)
    retain = examples_of(run.backbone, run.config, retain_samples)
    reason = unfit(method, task, modality)

    def edit() -> list[StageWeights]:
        return approximate_stages(run.backbone, run.config, run.prefix, 1, forget, retain, method)

    if reason is not None:
        assert f"`{method}`" in reason
        if modality in spec.modalities:  # refused for the task: a decoder's, causal_lm
            assert task == Task.CAUSAL_LM and f"needs {spec.what_it_needs}" in reason
        else:
            assert modality.value in reason
        with pytest.raises(UnlearningInputError) as refused:
            edit()
        assert str(refused.value) == reason
        return

    edited = edit()
    assert len(edited) == 1 and edited[0].adapters.keys() == run.prefix[1].adapters.keys()
    tensors = [t for pair in edited[0].adapters.values() for t in (pair.a, pair.b)]
    tensors += [edited[0].head_weight, edited[0].head_bias]
    assert all(bool(torch.isfinite(t).all()) for t in tensors)
    before = _outputs(run, run.prefix, forget.encoded)
    after = _outputs(run, [run.prefix[0], *edited], forget.encoded)
    assert torch.isfinite(after).all()
    assert float((after - before).abs().max()) > 1e-4  # the forget set's outputs moved
    if spec.forgets == "whole_classes":  # the class left: its samples look less like it
        assert float(after.softmax(-1)[:, 0].mean()) < float(before.softmax(-1)[:, 0].mean())


@pytest.mark.parametrize("family", [family.name for family in FAMILIES])
def test_what_a_method_edits_computes_what_serving_computes(
    trained: Callable[[str, Task], Trained], family: str
) -> None:
    """The prefix model every method edits reads the family's pooling (ViT's class token,
    ModernBERT's final norm), not a mean of its own: unedited, it gives serving's outputs; a
    decoder's are serving's next-token log-probabilities at every real position."""
    causal = next(f for f in FAMILIES if f.name == family).causal
    run = trained(family, Task.CAUSAL_LM if causal else Task.CLASSIFICATION)
    encoded = examples_of(run.backbone, run.config, run.samples[:6]).encoded
    predictor = EnsemblePredictor(run.backbone, run.config.target_modules)
    shard = ServedShard.from_prefix(run.prefix)
    if causal:
        lm = LmEnsemble(run.backbone, predictor, [shard])
        served = lm._logprobs(encoded.inputs, encoded.attention_mask)
        ours = _outputs(run, run.prefix, encoded).log_softmax(-1)
        real = encoded.attention_mask.bool()
        assert torch.allclose(ours[real], served[real], atol=1e-4)
        return
    served = predictor.shard_outputs(encoded, [shard])[0]
    assert torch.allclose(_outputs(run, run.prefix, encoded), served, atol=1e-5)


def _restricted(
    monkeypatch: pytest.MonkeyPatch, method: str, modalities: set[Modality]
) -> MethodSpec[Any]:
    """Declare, for this test, that ``method`` fits only ``modalities``."""
    spec = dataclasses.replace(registry.get(method), modalities=frozenset(modalities))
    monkeypatch.setitem(registry.REGISTRY._specs, method, spec)
    return spec


def test_a_method_declared_for_one_modality_is_refused_on_the_other_with_the_reason(
    trained: Callable[[str, Task], Trained], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _restricted(monkeypatch, "laf", {Modality.TEXT})
    reason = "`laf` works on text models only, not on image models"
    assert spec.unfit(Task.CLASSIFICATION, Modality.IMAGE) == reason
    assert unfit("laf", Task.REGRESSION, Modality.IMAGE) == reason
    assert unfit("laf", Task.CLASSIFICATION, Modality.TEXT) is None
    image = trained("vit", Task.CLASSIFICATION)
    forget = examples_of(image.backbone, image.config, image.samples[:4])
    retain = examples_of(image.backbone, image.config, image.samples[4:])
    with pytest.raises(UnlearningInputError, match=reason):
        approximate_stages(image.backbone, image.config, image.prefix, 1, forget, retain, "laf")
    text = trained("bert", Task.CLASSIFICATION)
    forget = examples_of(text.backbone, text.config, text.samples[:4])
    retain = examples_of(text.backbone, text.config, text.samples[4:])
    assert approximate_stages(text.backbone, text.config, text.prefix, 1, forget, retain, "laf")


@pytest.mark.parametrize("modality", list(Modality))
@pytest.mark.parametrize("task", [Task.CLASSIFICATION, Task.REGRESSION])
@pytest.mark.parametrize("shape", list(RequestShape))
def test_auto_chooses_a_method_that_fits(
    modality: Modality, task: Task, shape: RequestShape
) -> None:
    method, why = choose_method(shape, task, 0.05, modality)
    assert unfit(method, task, modality) is None and why


def test_auto_passes_over_a_method_that_does_not_fit_the_modality(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _restricted(monkeypatch, "ssd", {Modality.TEXT})
    _restricted(monkeypatch, "suppress_class", {Modality.TEXT})
    samples = RequestShape.samples
    assert choose_method(samples, Task.CLASSIFICATION, 0.05, Modality.TEXT)[0] == "ssd"
    assert choose_method(samples, Task.CLASSIFICATION, 0.05, Modality.IMAGE)[0] == "iau"
    whole = RequestShape.whole_class
    assert choose_method(whole, Task.CLASSIFICATION, 1.0, Modality.IMAGE)[0] == "refit_head"
    for name in ("iau", "refit_head"):
        _restricted(monkeypatch, name, {Modality.TEXT})
    with pytest.raises(UnlearningInputError, match="no approximate method fits"):
        choose_method(samples, Task.CLASSIFICATION, 0.05, Modality.IMAGE)


def test_a_registration_names_known_modalities() -> None:
    toys = registry.Registry()

    @dataclasses.dataclass(frozen=True)
    class Nothing:
        step: float = 0.1

    def run(model: PrefixModel, data: registry.PassData, config: Nothing) -> None:
        """Never run."""

    with pytest.raises(ValueError, match="modalities"):
        toys.method("none", config=Nothing, description="", modalities=())(run)
    toys.method("texts", config=Nothing, description="", modalities={Modality.TEXT})(run)
    assert toys.get("texts").modalities == {Modality.TEXT}
    assert toys.get("texts").unfit(Task.REGRESSION, Modality.IMAGE) == (
        "`texts` works on text models only, not on image models"
    )
    assert "| text |" in registry.markdown_table(toys)
