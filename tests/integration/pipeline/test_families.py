"""Every architecture family through the service: a model on a tiny
random-weight base model of the family trains, serves, and on a deletion answers at once from
none of the layers the deletion turned off; the retrain is bitwise what training without the
deleted samples gives, and the exactness audit, run by the service, agrees."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.base_models.service import register
from service.db.engine import unit_of_work
from service.engine import BaseModelKey, EngineCatalogue
from service.errors import BaseModelUnavailableError
from service.settings import Settings
from tests.integration.api import (
    Api,
    InProcessWorker,
    active_digests,
    invalidated_by,
    samples,
    trained_model,
    trained_without,
    used_layers,
)
from tests.integration.pipeline.test_base_models import _change_weights
from unlearning.families.testing import IMAGE_FAMILIES, TEXT_FAMILIES, digit_images, save_tiny_model

# The families differ in the engine, not in the database: SQLite is enough (the catalogue's own
# tests run on both backends).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("fresh_db", ["sqlite"], indirect=True),
]
N_SAMPLES = 20


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {
        family: save_tiny_model(family, root / family, n_layers=2)
        for family in TEXT_FAMILIES + IMAGE_FAMILIES
    }


@pytest.fixture
def catalogue_worker(settings: Settings) -> Iterator[InProcessWorker]:
    worker = InProcessWorker(settings, engines=EngineCatalogue(settings))
    yield worker
    worker.close()


def rows_for(family: str) -> list[dict[str, Any]]:
    rows = samples(N_SAMPLES)
    if family in IMAGE_FAMILIES:  # the same ids and labels, a digit image instead of a text
        images = digit_images(N_SAMPLES)
        for row, (image, digit) in zip(rows, images, strict=True):
            del row["text"]
            row["image"] = base64.b64encode(image).decode()
            row["label"] = "pos" if digit % 2 else "neg"
    return rows


def probe(family: str) -> dict[str, list[str]]:
    if family in IMAGE_FAMILIES:
        return {"images": [base64.b64encode(i).decode() for i, _ in digit_images(40)[-3:]]}
    return {"texts": ["good thing", "bad thing", "item"]}


@pytest.mark.parametrize("family", TEXT_FAMILIES + IMAGE_FAMILIES)
def test_a_family_deletes_fresh_at_once_and_retrains_exactly(
    api: Api,
    admin: Api,
    catalogue_worker: InProcessWorker,
    db: sessionmaker[Session],
    settings: Settings,
    family_folders: dict[str, Path],
    family: str,
) -> None:
    with unit_of_work(db) as session:
        base = register(session, settings, f"fam-{family}", str(family_folders[family]))
        targets = list(base.default_targets)
    rows = rows_for(family)
    model_id = trained_model(api, catalogue_worker, rows, {"base_model": f"fam-{family}"})
    model = api.ok(api.get(f"/models/{model_id}"))
    assert model["base_model"]["family"] == family
    assert model["config"]["target_modules"] == targets  # the family's default LoRA targets
    before = api.ok(api.post(f"/models/{model_id}/predict", probe(family)))
    assert len(before["predictions"]) == 3

    deletion = api.ok(api.delete(model_id, sample_ids=["s003", "s010"]), 202)
    after = api.ok(api.post(f"/models/{model_id}/predict", probe(family)))
    assert not used_layers(after) & invalidated_by(api, deletion["id"])

    assert catalogue_worker.drain() >= 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    engines = catalogue_worker.engines
    assert isinstance(engines, EngineCatalogue)
    engine = engines.engines()[0]
    assert engine.backbone.family.name == family
    reference = trained_without(engine, model, rows, {"s003", "s010"})
    assert active_digests(catalogue_worker, model_id) == reference
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    retrained = {layer["artifact"] for layer in certificate["layers_retrained"]}
    assert retrained and retrained <= reference
    assert certificate["base_model"]["sha256"] == base_sha(api, family)

    audit = admin.ok(admin.post(f"/models/{model_id}/exactness-audits"), 202)
    assert catalogue_worker.audit() == 1
    result = admin.ok(admin.get(f"/models/{model_id}/exactness-audits/{audit['id']}"))
    assert result["result"] == "passed", result

    # The family's weights change on disk: the next process to load the base model refuses it.
    key = BaseModelKey(f"fam-{family}", str(family_folders[family]), base_sha(api, family))
    _change_weights(family_folders[family])
    try:
        with pytest.raises(BaseModelUnavailableError, match="changed since it was registered"):
            EngineCatalogue(settings).engine(key)
    finally:
        shutil.rmtree(family_folders[family])
        save_tiny_model(family, family_folders[family], n_layers=2)


def base_sha(api: Api, family: str) -> str:
    sha: str = api.ok(api.get(f"/base-models/fam-{family}"))["sha256"]
    return sha
