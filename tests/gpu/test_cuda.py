"""The library on a CUDA GPU: exactness, reproducibility, passes and serving (`make test-gpu`).

Exactness is bitwise per compute profile: on CUDA, with deterministic algorithms, "train, delete,
retrain" gives the same artifact bytes as "train without the samples", and two runs agree.
CUDA and CPU results differ in the last bits, so comparisons across devices are approximate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_models import tiny_backbone
from tests.unit.s3t.conftest import TINY, toy_samples
from tests.unit.s3t.test_exactness import TEXTS, _delete_from_position, _index, _unlearn
from unlearning.approx.prefix_pass import MethodName, approximate_stages, examples_of
from unlearning.artifacts import LocalArtifactStore
from unlearning.device import profile_of, resolve_device
from unlearning.evaluation.metrics import accuracy
from unlearning.s3t import Backbone, ModelSpec, S3TEngine


@pytest.fixture(scope="module")
def cuda() -> Backbone:
    return tiny_backbone(4, "cuda")


def _engine(backbone: Backbone, folder: Path) -> S3TEngine:
    return S3TEngine(backbone, LocalArtifactStore(folder))


def test_auto_picks_the_gpu_and_names_its_profile() -> None:
    device = resolve_device("auto")
    assert device.type == "cuda"
    major, minor = torch.cuda.get_device_capability(device)
    assert profile_of(device).startswith(f"cuda-sm{major}{minor}-torch")


@pytest.mark.parametrize("position", [1, 2, 3])
def test_retrain_on_cuda_is_bitwise_equal_to_training_without_the_samples(
    cuda: Backbone, tmp_path: Path, position: int
) -> None:
    spec = ModelSpec.plan(TINY)
    samples = toy_samples(TINY)
    engine = _engine(cuda, tmp_path / "a")
    trained = _index(engine.train(spec, samples))
    deleted, remaining = _delete_from_position(spec, samples, 0, 0, position)
    retrained = _unlearn(engine, spec, trained, deleted, remaining)
    fresh = _index(_engine(cuda, tmp_path / "b").train(spec, remaining))
    assert retrained == fresh
    assert trained[(0, 0, position)] != retrained[(0, 0, position)]


def test_two_cuda_runs_are_bitwise_equal_and_differ_from_the_cpu(
    cuda: Backbone, tmp_path: Path
) -> None:
    spec = ModelSpec.plan(TINY)
    samples = toy_samples(TINY)
    first = _index(_engine(cuda, tmp_path / "a").train(spec, samples))
    second = _index(_engine(cuda, tmp_path / "b").train(spec, samples))
    assert first == second
    on_cpu = _index(_engine(tiny_backbone(4), tmp_path / "c").train(spec, samples))
    assert on_cpu.keys() == first.keys()  # same lineage; bytes may differ in the last bits


def test_artifacts_trained_on_cuda_serve_on_the_cpu(cuda: Backbone, tmp_path: Path) -> None:
    """Artifacts are device-independent bytes: a CPU process serves what a GPU trained."""
    spec = ModelSpec.plan(TINY)
    store = tmp_path / "store"
    layers = _index(_engine(cuda, store).train(spec, toy_samples(TINY)))
    prefixes = {
        shard: [layers[(shard, 0, stage)] for stage in range(1, TINY.n_slices + 1)]
        for shard in range(TINY.n_shards)
    }
    on_gpu = _engine(cuda, store).predict(TINY, TEXTS, prefixes).outputs
    on_cpu = _engine(tiny_backbone(4), store).predict(TINY, TEXTS, prefixes).outputs
    assert on_gpu.device.type == "cuda" and on_cpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


def test_serving_on_cuda_equals_the_shard_passes(cuda: Backbone, tmp_path: Path) -> None:
    """The batched multi-adapter forward equals one full forward pass per shard."""
    spec = ModelSpec.plan(TINY)
    engine = _engine(cuda, tmp_path)
    layers = _index(engine.train(spec, toy_samples(TINY)))
    prefixes = {0: [layers[(0, 0, 1)], layers[(0, 0, 2)]], 1: [layers[(1, 1, 1)]]}
    batched = engine.predict(TINY, TEXTS, prefixes, batched=True).outputs
    one_by_one = engine.predict(TINY, TEXTS, prefixes, batched=False).outputs
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["ssd", "iau", "finetune", "laf"])
def test_an_approximate_pass_runs_on_cuda_and_repeats_exactly(
    cuda: Backbone, tmp_path: Path, method: MethodName
) -> None:
    spec = ModelSpec.plan(TINY)
    samples = toy_samples(TINY)
    engine = _engine(cuda, tmp_path)
    layers = _index(engine.train(spec, samples))
    stages = [engine.load_stage(layers[(0, 0, s)]) for s in range(1, TINY.n_slices + 1)]
    slice_ = spec.orders[0][1]
    forget = [s for s in samples if (s.shard, s.slice) == (0, slice_)][:3]
    retain = [s for s in samples if s.shard == 0 and s not in forget]
    runs = [
        approximate_stages(
            cuda,
            TINY,
            stages,
            1,
            examples_of(cuda, TINY, forget),
            examples_of(cuda, TINY, retain),
            method,
        )
        for _ in range(2)
    ]
    assert [s.to_bytes() for s in runs[0]] == [s.to_bytes() for s in runs[1]]
    assert runs[0][-1].head_weight.device.type == "cuda"


def test_the_evaluation_harness_reads_cuda_outputs(cuda: Backbone, tmp_path: Path) -> None:
    spec = ModelSpec.plan(TINY)
    samples = toy_samples(TINY)
    engine = _engine(cuda, tmp_path)
    layers = _index(engine.train(spec, samples))
    prefixes = {s: [layers[(s, 0, 1)]] for s in range(TINY.n_shards)}
    texts = [s.content for s in samples]
    labels = torch.tensor([int(s.target) for s in samples], device="cuda")
    outputs = engine.predict(TINY, texts, prefixes).outputs
    assert 0.0 <= accuracy(outputs, labels) <= 100.0
