"""Images end to end over HTTP on SQLite and PostgreSQL, jobs run in this process: a model on a
tiny ViT base model registers digit images (base64 PNG), trains, predicts images, deletes a
subject's images, answers at once from none of the invalidated layers, retrains bitwise equal to
a fresh training without those images (the exactness audit agrees), and keeps nothing of them:
no payload row, no bytes in any table or log, no artifact that learned from them. Also what is
refused, and how: a text for an image model, an image for a text model, images that are not PNG
or JPEG or are over a limit.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.base_models.service import register
from service.db.engine import unit_of_work
from service.db.models import Base, Layer, LayerState, Sample, SamplePayload
from service.engine import EngineCatalogue
from service.settings import Settings
from tests.integration.api import (
    TINY_MODEL,
    Api,
    InProcessWorker,
    active_digests,
    invalidated_by,
    problem,
    trained_without,
    used_layers,
)
from tests.integration.pipeline.test_no_data_left import _live, _refs, _stored
from tests.tiny_models import TINY_SETTINGS
from unlearning.families.testing import digit_images, save_tiny_model
from unlearning.s3t import S3TEngine

pytestmark = pytest.mark.integration
PROBLEMS = "https://unlearn.dev/problems/"
SUBJECT = "img-subject@example.com"
DIGITS = [str(d) for d in range(10)]
VIT_MODEL = {
    "name": "digits",
    "base_model": "tiny-vit",
    "labels": DIGITS,
    "n_shards": 2,
    "n_slices": 2,
    "budget": 2,
    **TINY_SETTINGS,
}


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("vit", tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture
def vit(db: sessionmaker[Session], settings: Settings, vit_dir: Path) -> str:
    """The tiny ViT registered in the catalogue as `tiny-vit` (`unlearn base-models register`);
    the deployment's default base model stays the tiny BERT."""
    with unit_of_work(db) as session:
        base = register(session, settings, "tiny-vit", str(vit_dir))
        assert (base.family, base.modality.value) == ("vit", "image")
        return base.sha256


@pytest.fixture
def worker(settings: Settings) -> Iterator[InProcessWorker]:
    """Jobs computed as a worker does: each model on the engine of its own base model."""
    worker = InProcessWorker(settings, engines=EngineCatalogue(settings))
    yield worker
    worker.close()


def vit_engine(worker: InProcessWorker) -> S3TEngine:
    engines = worker.engines
    assert isinstance(engines, EngineCatalogue)
    [engine] = [e for e in engines.engines() if e.backbone.family.name == "vit"]
    return engine


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_rows(n: int, subject_rows: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """``n`` digit images as sample rows; ``subject_rows`` belong to :data:`SUBJECT`."""
    rows = []
    for i, (image, label) in enumerate(digit_images(n)):
        row: dict[str, Any] = {"external_id": f"d{i:03d}", "label": str(label), "image": b64(image)}
        if i in subject_rows:
            row["subject_id"] = SUBJECT
        rows.append(row)
    return rows


def other_image(kind: str, size: tuple[int, int] = (8, 8)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=kind)
    return buffer.getvalue()


def _tables_hold(worker: InProcessWorker, needle: bytes) -> bool:
    """Whether any value of any row of any table contains ``needle`` (bytes, or as text)."""
    text = needle.decode("latin-1")
    with worker.factory() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(sa.select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview) and needle in bytes(value):
                        return True
                    if isinstance(value, str) and text in value:
                        return True
    return False


def _artifacts_hold(settings: Settings, needle: bytes) -> bool:
    assert settings.artifacts_dir is not None
    files = [p for p in Path(settings.artifacts_dir).rglob("*") if p.is_file()]
    assert files
    return any(needle in p.read_bytes() for p in files)


def test_image_deletion_is_exact_fresh_and_leaves_nothing(
    api: Api,
    admin: Api,
    worker: InProcessWorker,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    vit: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    gone_rows = (3, 11, 17)
    rows = image_rows(40, gone_rows)
    gone_ids = {rows[i]["external_id"] for i in gone_rows}
    gone_images = [base64.b64decode(rows[i]["image"]) for i in gone_rows]
    kept = {base64.b64decode(r["image"]) for r in rows if r["external_id"] not in gone_ids}
    assert not set(gone_images) & kept, "a deleted image must not also be a kept one"

    model = api.ok(api.post("/models", VIT_MODEL), 201)
    assert model["base_model"] == {
        "name": "tiny-vit",
        "family": "vit",
        "modality": "image",
        "sha256": vit,
    }
    stored = api.ok(api.post(f"/models/{model['id']}/samples", {"samples": rows}))
    assert stored["stored"] == 40 and stored["errors"] == []
    with worker.factory() as session:
        payloads = session.scalars(sa.select(SamplePayload)).all()
        assert {p.media_type for p in payloads} == {"image/png"}
        assert set(gone_images) <= {p.image for p in payloads}  # stored as sent
    accepted = api.ok(api.post(f"/models/{model['id']}/train"), 202)
    assert worker.drain() == 4
    assert api.ok(api.get(accepted["job_url"]))["status"] == "succeeded"

    probe = [b64(image) for image, _ in digit_images(44)[-4:]]
    before = api.ok(api.post(f"/models/{model['id']}/predict", {"images": probe}))
    assert len(before["predictions"]) == 4 and len(before["shards"]) == 2
    assert all(p["label"] in DIGITS for p in before["predictions"])

    deletion = api.ok(api.delete(model["id"], subject_id=SUBJECT), 202)
    assert deletion["status"] == "deactivated" and deletion["counts"]["deleted"] == 3
    with worker.factory() as session:  # an exact deletion hard-deletes the payloads at once
        deleted = session.scalars(sa.select(Sample.id).where(Sample.deleted.is_(True))).all()
        assert len(deleted) == 3
        left = session.scalars(
            sa.select(SamplePayload.sample_id).where(SamplePayload.sample_id.in_(deleted))
        ).all()
        assert left == []
    after = api.ok(api.post(f"/models/{model['id']}/predict", {"images": probe}))
    assert after["serving_generation"] >= deletion["serving_generation"]
    invalidated = invalidated_by(api, deletion["id"])
    assert not used_layers(after) & invalidated, "an answer after the 202 used a stale layer"
    saw = _refs(worker, Layer.state == LayerState.invalidated)
    assert saw

    worker.drain()
    done = api.ok(api.get(f"/deletions/{deletion['id']}"))
    assert done["status"] == "completed"
    model_now = api.ok(api.get(f"/models/{model['id']}"))
    reference = trained_without(
        vit_engine(worker), model_now, rows, gone_ids, placed=worker.placements(model["id"])
    )
    assert active_digests(worker, model["id"]) == reference, "the retrain is not bitwise exact"
    retrained = api.ok(api.post(f"/models/{model['id']}/predict", {"images": probe}))
    assert not used_layers(retrained) & invalidated

    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["payloads_deleted"] and certificate["audit_chain_verified"]
    assert certificate["base_model"]["sha256"] == vit
    assert {layer["layer_id"] for layer in certificate["layers_invalidated"]} == invalidated
    assert {layer["artifact"] for layer in certificate["layers_retrained"]} <= reference

    audit = admin.ok(admin.post(f"/models/{model['id']}/exactness-audits"), 202)
    assert worker.audit() == 1  # retrains every shard from scratch on the live images
    audit = admin.ok(admin.get(audit["audit_url"]))
    assert (audit["status"], audit["result"], audit["mismatched"]) == ("succeeded", "passed", [])

    stored_files = _stored(settings)
    assert stored_files <= _live(worker), "every stored file is an active layer's or statistics"
    assert not stored_files & saw, "no stored artifact is one that learned from the images"
    for image in gone_images:
        assert not _tables_hold(worker, image), "a deleted image's bytes are still stored"
        assert not _artifacts_hold(settings, image)
        assert b64(image) not in caplog.text
    assert _tables_hold(worker, next(iter(kept))), "the check can see a stored image"

    page = admin.get(f"/dashboard/models/{model['id']}")
    assert page.status_code == 200 and 'data-modality="image"' in page.text
    assert "tiny-vit" in page.text and "base64 PNG or JPEG" in page.text
    assert 'data-modality="image"' in admin.get("/dashboard").text


def test_what_an_image_model_refuses(api: Api, client: TestClient, vit: str) -> None:
    model = api.ok(api.post("/models", VIT_MODEL), 201)
    url = f"/models/{model['id']}"
    png, _ = digit_images(1)[0]
    rows = [
        {"external_id": "ok", "label": "1", "image": b64(png)},
        {"external_id": "text", "label": "1", "text": "a digit"},
        {"external_id": "gif", "label": "1", "image": b64(other_image("GIF"))},
        {"external_id": "b64", "label": "1", "image": "not base64!"},
        {"external_id": "both", "label": "1", "image": b64(png), "text": "a digit"},
        {"external_id": "jpeg", "label": "2", "image": b64(other_image("JPEG"))},
        {"external_id": "cut", "label": "2", "image": b64(png[: len(png) // 2])},
    ]
    result = api.ok(api.post(f"{url}/samples", {"samples": rows}))
    assert result["stored"] == 2  # the PNG and the JPEG
    errors = {e["external_id"]: e for e in result["errors"]}
    assert errors["text"]["type"] == PROBLEMS + "wrong-modality"
    assert "reads images" in errors["text"]["detail"]
    for name in ("gif", "b64", "cut"):
        assert errors[name]["type"] == PROBLEMS + "invalid-image", name
    assert "exactly one" in errors["both"]["detail"]

    texts = problem(api.post(f"{url}/predict", {"texts": ["a digit"]}), 422)
    assert texts["type"] == PROBLEMS + "wrong-modality" and "`images`" in texts["detail"]
    bad = problem(api.post(f"{url}/predict", {"images": [b64(png), b64(b"GIF89a...")]}), 422)
    assert bad["type"] == PROBLEMS + "invalid-image" and "images[1]" in bad["detail"]
    for body in ({}, {"images": [b64(png)], "texts": ["x"]}):
        assert "exactly one" in str(problem(api.post(f"{url}/predict", body), 422))

    # The limits, each named in its refusal; the pixels are read from the header.
    app_settings = client.app.state.settings  # type: ignore[attr-defined]
    client.app.state.settings = app_settings.model_copy(  # type: ignore[attr-defined]
        update={"max_image_pixels": 63, "max_image_bytes": 4096}
    )
    try:
        big = {"external_id": "big", "label": "1", "image": b64(other_image("PNG", (8, 8)))}
        heavy = {"external_id": "heavy", "label": "1", "image": b64(b"\x89PNG" + bytes(5000))}
        result = api.ok(api.post(f"{url}/samples", {"samples": [big, heavy]}))
        errors = {e["external_id"]: e["detail"] for e in result["errors"]}
        assert result["stored"] == 0
        assert "UNLEARN_MAX_IMAGE_PIXELS" in errors["big"] and "8x8" in errors["big"]
        assert "UNLEARN_MAX_IMAGE_BYTES" in errors["heavy"]
        refused = problem(api.post(f"{url}/predict", {"images": [b64(png)]}), 422)
        assert "UNLEARN_MAX_IMAGE_PIXELS" in refused["detail"]
    finally:
        client.app.state.settings = app_settings  # type: ignore[attr-defined]


def test_a_text_model_refuses_images(api: Api, admin: Api) -> None:
    model = api.ok(api.post("/models", TINY_MODEL), 201)
    assert model["base_model"]["modality"] == "text"
    png, _ = digit_images(1)[0]
    rows = [
        {"external_id": "img", "label": "pos", "image": b64(png)},
        {"external_id": "txt", "label": "pos", "text": "good"},
    ]
    result = api.ok(api.post(f"/models/{model['id']}/samples", {"samples": rows}))
    assert result["stored"] == 1
    [error] = result["errors"]
    assert error["external_id"] == "img" and error["type"] == PROBLEMS + "wrong-modality"
    assert "reads texts" in error["detail"]
    refused = problem(api.post(f"/models/{model['id']}/predict", {"images": [b64(png)]}), 422)
    assert refused["type"] == PROBLEMS + "wrong-modality" and "`texts`" in refused["detail"]
    page = admin.get(f"/dashboard/models/{model['id']}").text
    assert 'data-modality="text"' in page and "reads texts" in page


def test_an_image_model_measures_its_accuracy_on_its_evaluation_split(
    api: Api, worker: InProcessWorker, vit: str
) -> None:
    rows = image_rows(48)
    held_out = [{**row, "split": "eval"} for row in rows[40:]]
    model = api.ok(api.post("/models", VIT_MODEL), 201)
    stored = api.ok(api.post(f"/models/{model['id']}/samples", {"samples": rows[:40] + held_out}))
    assert (stored["stored"], stored["eval_samples"]) == (48, 8)
    api.ok(api.post(f"/models/{model['id']}/train"), 202)
    worker.drain()
    assert worker.measure() == 1
    measured = api.ok(api.get(f"/models/{model['id']}/status"))["measured_quality"]
    assert (measured["metric"], measured["n_eval"]) == ("accuracy", 8)
    answer = api.ok(
        api.post(f"/models/{model['id']}/predict", {"images": [r["image"] for r in held_out]})
    )
    right = sum(
        p["label"] == r["label"] for p, r in zip(answer["predictions"], held_out, strict=True)
    )
    assert measured["value"] == pytest.approx(100 * right / len(held_out))
