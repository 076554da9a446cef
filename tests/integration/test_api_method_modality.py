"""An approximate method that does not fit a base model's modality is refused, with the
registry's reason, when a model on that base names it (``POST /models``) and when a deletion on
such a model asks for it (``POST /deletions``): never when its pass runs.

Every registered method works on text and images (tests/unit/approx/test_families.py), so the
test declares one of them text-only for its duration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import Modality as BaseModality
from service.db.repositories import BaseModelRepository
from service.settings import Settings
from tests.integration.api import auth, problem
from unlearning.approx import registry
from unlearning.base_models import weights_digest
from unlearning.families import Modality, family_named
from unlearning.families.testing import save_tiny_model

pytestmark = pytest.mark.integration

MODEL = {"name": "digits", "labels": ["even", "odd"], "n_shards": 1, "n_slices": 2, "budget": 1}
REASON = "`laf` works on text models only, not on image models"


@pytest.fixture
def image_base(settings: Settings, tmp_path: Path) -> str:
    """A tiny ViT in the catalogue as `tiny-vit`. Its row is written directly: what is tested
    is the refusal by modality, whatever registration reads of the folder."""
    folder = save_tiny_model("vit", tmp_path / "vit", n_layers=2)
    family = family_named("vit")
    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        BaseModelRepository.from_session(session).add(
            name="tiny-vit",
            family=family.name,
            modality=BaseModality(family.modality.value),
            uri=str(folder),
            sha256=weights_digest(folder),
            n_layers=2,
            hidden_size=32,
            default_targets=family.default_targets,
        )
    engine.dispose()
    return "tiny-vit"


@pytest.fixture
def laf_for_texts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(registry.get("laf"), modalities=frozenset({Modality.TEXT}))
    monkeypatch.setitem(registry.REGISTRY._specs, "laf", spec)


@pytest.mark.usefixtures("laf_for_texts_only")
def test_a_method_unfit_for_the_base_models_modality_is_a_422_with_the_reason(
    client: TestClient, keys: dict[str, str], image_base: str
) -> None:
    headers = auth(keys["a"])
    on_images = {**MODEL, "base_model": image_base}
    body = problem(
        client.post("/models", json={**on_images, "approximate_method": "laf"}, headers=headers),
        422,
    )
    assert REASON in body["detail"]
    # The same method on a text base, and a method that fits images on this one, are models.
    text_model = client.post(
        "/models", json={**MODEL, "name": "news", "approximate_method": "laf"}, headers=headers
    )
    assert text_model.status_code == 201, text_model.text
    assert text_model.json()["base_model"]["modality"] == "text"
    created = client.post(
        "/models", json={**on_images, "approximate_method": "ssd"}, headers=headers
    )
    assert created.status_code == 201, created.text
    image_model = created.json()
    assert image_model["base_model"]["modality"] == "image"
    # A deletion on the image model asking for the method is refused before anything changes.
    deletion = {"model_id": image_model["id"], "sample_ids": ["s1"], "method": "laf"}
    body = problem(client.post("/deletions", json=deletion, headers=headers), 422)
    assert REASON in body["detail"]
    listed = client.get("/deletions", params={"model_id": image_model["id"]}, headers=headers)
    assert listed.status_code == 200 and not listed.json()["items"], listed.text
