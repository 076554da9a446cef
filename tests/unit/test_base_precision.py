"""UNLEARN_BASE_PRECISION: the engines load base models in it, and the profile a process
computes on (its workers' queues, new models' default) names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from service.engine import BaseModelKey, EngineCatalogue, build_engine, default_compute_profile
from service.errors import BaseModelUnavailableError
from service.settings import Settings
from unlearning.base_models import weights_digest
from unlearning.device import torch_version
from unlearning.families.testing import save_tiny_model
from unlearning.precision import int8_available


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("UNLEARN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("UNLEARN_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("UNLEARN_DEVICE", "cpu")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("base") / "llama")


def test_float32_is_the_default_and_keeps_the_bare_profile() -> None:
    settings = Settings()
    assert settings.base_precision == "float32"
    assert default_compute_profile(settings) == f"cpu-torch{torch_version()}"


def test_the_default_profile_names_the_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_BASE_PRECISION", "bfloat16")
    assert default_compute_profile(Settings()) == f"cpu-torch{torch_version()}-bf16"
    monkeypatch.setenv("UNLEARN_COMPUTE_PROFILE", "cuda-sm90-torch2.13.0-bf16")
    assert default_compute_profile(Settings()) == "cuda-sm90-torch2.13.0-bf16"


@pytest.mark.parametrize("value", ["bf16", "fp32", "int4", "BFLOAT16"])
def test_unknown_precisions_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("UNLEARN_BASE_PRECISION", value)
    with pytest.raises(ValidationError, match="base_precision"):
        Settings()


def test_engines_load_the_base_in_the_precision(
    monkeypatch: pytest.MonkeyPatch, llama: Path
) -> None:
    monkeypatch.setenv("UNLEARN_BASE_PRECISION", "bfloat16")
    monkeypatch.setenv("UNLEARN_BACKBONE_PATH", str(llama))
    settings = Settings()
    assert build_engine(settings).backbone.dtype == torch.bfloat16
    key = BaseModelKey("llama", str(llama), weights_digest(llama))
    backbone = EngineCatalogue(settings).engine(key).backbone
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}
    assert backbone.compute_profile == default_compute_profile(settings)


@pytest.mark.skipif(int8_available(), reason="checks the refusal where bitsandbytes is absent")
def test_int8_without_bitsandbytes_is_an_unavailable_base_not_a_fallback(
    monkeypatch: pytest.MonkeyPatch, llama: Path
) -> None:
    monkeypatch.setenv("UNLEARN_BASE_PRECISION", "int8")
    settings = Settings()  # a valid setting: whether it can run is this machine's business
    key = BaseModelKey("llama", str(llama), weights_digest(llama))
    with pytest.raises(BaseModelUnavailableError, match="'int8' needs bitsandbytes"):
        EngineCatalogue(settings).engine(key)
