"""The base-model catalogue end to end (SQLite and PostgreSQL): operators register hashed base
models (an unsupported architecture is refused then, never at training), tenants list them and
name one per model, one engine catalogue trains and serves models on several bases within its
memory bound, a base model whose weights changed on disk is refused at load (a failed job, a 503
prediction), and certificates and exactness audits name the digest the layers sit on."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from sqlalchemy.orm import Session, sessionmaker
from transformers import BloomConfig, BloomModel

from service.base_models.service import default_folder, register
from service.cli import main
from service.db import migrate
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import Modality
from service.db.repositories import ModelRepository, TenantRepository
from service.engine import BaseModelKey, EngineCatalogue
from service.errors import BaseModelUnavailableError, ConflictError, InvalidBaseModelError
from service.observability import logs
from service.serving.registry import ServingRegistry
from service.settings import Settings, get_settings
from tests.conftest import FreshDatabase, make_model
from tests.integration.api import (
    TINY_BASE,
    TINY_MODEL,
    Api,
    InProcessWorker,
    problem,
    samples,
    trained_model,
)
from tests.integration.s3 import S3Server
from unlearning.base_models import weights_digest
from unlearning.families.testing import save_tiny_model
from unlearning.s3t import load_backbone

N_SAMPLES = 16
BEFORE_CATALOGUE = "d8f0a2c4e6b8"  # the revision before base_models


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight base models of three text architectures, an image one, and an
    architecture no family adapter supports."""
    root = tmp_path_factory.mktemp("base-models")
    bloom = root / "bloom"
    torch.manual_seed(0)
    BloomModel(BloomConfig(n_layer=2, hidden_size=16, n_head=2, vocab_size=64)).save_pretrained(
        bloom
    )
    return {
        "bert-3": save_tiny_model("bert", root / "bert-3", n_layers=3, seed=11),
        "roberta-4": save_tiny_model("roberta", root / "roberta-4", n_layers=4, seed=12),
        "vit-4": save_tiny_model("vit", root / "vit-4", n_layers=4, seed=13),
        "bloom": bloom,
    }


@pytest.fixture
def catalogue_worker(settings: Settings) -> Iterator[InProcessWorker]:
    """A worker whose jobs load each model's registered base model (an engine catalogue)."""
    worker = InProcessWorker(settings, engines=EngineCatalogue(settings))
    yield worker
    worker.close()


def _register(db: sessionmaker[Session], settings: Settings, name: str, folder: Path) -> str:
    with unit_of_work(db) as session:
        return register(session, settings, name, str(folder)).sha256


def test_registration_records_the_family_and_digest_and_refuses_what_it_cannot_serve(
    db: sessionmaker[Session], settings: Settings, folders: dict[str, Path]
) -> None:
    with unit_of_work(db) as session:
        bert = register(session, settings, "bert-3", str(folders["bert-3"]))
        vit = register(session, settings, "vit-4", str(folders["vit-4"]))
        described = [
            (b.family, b.modality, b.n_layers, b.hidden_size, b.default_targets, b.sha256)
            for b in (bert, vit)
        ]
    assert described == [
        ("bert", Modality.text, 3, 32, ["query", "value"], weights_digest(folders["bert-3"])),
        (
            "vit",
            Modality.image,
            4,
            32,
            ["query", "value", "q_proj", "v_proj"],
            weights_digest(folders["vit-4"]),
        ),
    ]
    with unit_of_work(db) as session, pytest.raises(InvalidBaseModelError) as refused:
        register(session, settings, "bloom", str(folders["bloom"]))
    assert "'bloom' is not supported" in refused.value.detail
    assert "bert" in refused.value.detail  # it names what is supported
    with unit_of_work(db) as session, pytest.raises(ConflictError, match="is registered"):
        register(session, settings, "bert-3", str(folders["roberta-4"]))
    with unit_of_work(db) as session, pytest.raises(InvalidBaseModelError, match="lowercase"):
        register(session, settings, "Not A Slug", str(folders["bert-3"]))
    with unit_of_work(db) as session, pytest.raises(InvalidBaseModelError, match="no model"):
        register(session, settings, "missing", str(folders["bert-3"] / "nowhere"))


def test_tenants_list_the_catalogue_and_name_a_base_model_per_model(
    api: Api, db: sessionmaker[Session], settings: Settings, folders: dict[str, Path]
) -> None:
    sha = _register(db, settings, "bert-3", folders["bert-3"])
    listed = api.ok(api.get("/base-models"))["items"]
    assert [(b["name"], b["default"]) for b in listed] == [
        ("bert-3", False),
        ("minilm-l6", False),  # the migration's default of the template database
        (TINY_BASE, True),  # registered by the app at start: the settings' default
    ]
    one = api.ok(api.get("/base-models/bert-3"))
    assert (one["family"], one["modality"], one["n_layers"], one["sha256"]) == (
        "bert",
        "text",
        3,
        sha,
    )
    assert "uri" not in one  # the deployment's paths are the operators' business
    missing = problem(api.get("/base-models/nope"), 404)
    assert "bert-3" in missing["detail"] and TINY_BASE in missing["detail"]
    problem(api.client.get("/base-models"), 401)

    unknown = problem(api.post("/models", {**TINY_MODEL, "base_model": "nope"}), 422)
    assert "registered: bert-3, minilm-l6, tiny-bert" in unknown["detail"]
    assert unknown["known"] == ["bert-3", "minilm-l6", TINY_BASE]
    too_deep = problem(
        api.post("/models", {**TINY_MODEL, "base_model": "bert-3", "n_slices": 4}), 422
    )
    assert "exceeds the 3 layers of base model 'bert-3'" in too_deep["detail"]

    model = api.ok(api.post("/models", {**TINY_MODEL, "base_model": "bert-3"}), 201)
    assert model["base_model"] == {
        "name": "bert-3",
        "family": "bert",
        "modality": "text",
        "sha256": sha,
    }
    assert model["config"]["target_modules"] == ["query", "value"]  # the family's default
    default = api.ok(api.post("/models", {**TINY_MODEL, "target_modules": ["query"]}), 201)
    assert default["base_model"]["name"] == TINY_BASE
    assert default["config"]["target_modules"] == ["query"]


def test_operators_register_list_and_remove_with_the_cli(
    api: Api, settings: Settings, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *_: None)  # this process's logging stays
    monkeypatch.setenv("UNLEARN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("UNLEARN_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        cli = CliRunner()
        added = cli.invoke(
            main, ["base-models", "register", "roberta-4", str(folders["roberta-4"])]
        )
        assert added.exit_code == 0, added.output
        assert added.output.split("\t")[:3] == ["roberta-4", "roberta", "text"]
        refused = cli.invoke(main, ["base-models", "register", "bloom", str(folders["bloom"])])
        assert refused.exit_code != 0 and "'bloom' is not supported" in refused.output
        assert "Traceback" not in refused.output

        api.ok(api.post("/models", {**TINY_MODEL, "base_model": "roberta-4"}), 201)
        listed = cli.invoke(main, ["base-models", "list"])
        assert listed.exit_code == 0, listed.output
        rows = {line.split("\t")[0]: line.split("\t") for line in listed.output.splitlines()}
        assert rows["roberta-4"][4] == "1 models"
        assert rows["roberta-4"][5] == weights_digest(folders["roberta-4"])

        in_use = cli.invoke(main, ["base-models", "remove", "roberta-4"])
        assert in_use.exit_code != 0
        assert "base model 'roberta-4' is used by 1 model(s)" in in_use.output
        assert "roberta-4" in api.ok(api.get("/base-models/roberta-4"))["name"]
        removed = cli.invoke(main, ["base-models", "remove", "minilm-l6"])  # unused
        assert removed.exit_code == 0, removed.output
        problem(api.get("/base-models/minilm-l6"), 404)
    finally:
        get_settings.cache_clear()


def test_a_model_on_another_base_trains_serves_and_certifies_its_digest(
    api: Api,
    admin: Api,
    catalogue_worker: InProcessWorker,
    db: sessionmaker[Session],
    settings: Settings,
    folders: dict[str, Path],
) -> None:
    sha = _register(db, settings, "bert-3", folders["bert-3"])
    rows = samples(N_SAMPLES)
    model_id = trained_model(
        api, catalogue_worker, rows, {"base_model": "bert-3", "n_slices": 3, "budget": 2}
    )
    engines = catalogue_worker.engines
    assert isinstance(engines, EngineCatalogue) and engines.loaded == ["bert-3"]
    assert engines.engines()[0].backbone.n_layers == 3  # trained on bert-3, not the default

    prediction = api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good", "bad"]}))
    assert len(prediction["predictions"]) == 2
    deletion = api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    assert catalogue_worker.drain() >= 1
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["status"] == "completed"
    assert certificate["base_model"] == {
        "name": "bert-3",
        "family": "bert",
        "modality": "text",
        "sha256": sha,
    }

    audit = admin.ok(admin.post(f"/models/{model_id}/exactness-audits"), 202)
    assert catalogue_worker.audit() == 1
    result = admin.ok(admin.get(f"/models/{model_id}/exactness-audits/{audit['id']}"))
    assert (result["result"], result["base_model"], result["base_model_sha256"]) == (
        "passed",
        "bert-3",
        sha,
    )
    linked = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))["exactness_audits"]
    assert [link["base_model_sha256"] for link in linked] == [sha]


def _change_weights(folder: Path) -> None:
    """Nudge one weight of the folder's safetensors file, as a bad copy or an edit would."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, path, metadata={"format": "pt"})


def test_a_base_model_whose_weights_changed_is_refused_at_load(
    api: Api,
    client: TestClient,
    catalogue_worker: InProcessWorker,
    db: sessionmaker[Session],
    settings: Settings,
    folders: dict[str, Path],
    tmp_path: Path,
) -> None:
    folder = shutil.copytree(folders["bert-3"], tmp_path / "bert-3-copy")
    _register(db, settings, "bert-3", folder)
    model_id = trained_model(
        api, catalogue_worker, samples(N_SAMPLES), {"base_model": "bert-3", "n_slices": 3}
    )
    _change_weights(folder)

    # A process that loads it now (a restarted worker or API) refuses it.
    fresh = InProcessWorker(settings, engines=EngineCatalogue(settings))
    try:
        deletion = api.ok(api.delete(model_id, sample_ids=["s002"]), 202)
        job_id = fresh.queued()[0]
        with pytest.raises(BaseModelUnavailableError, match="changed since it was registered"):
            fresh.run(job_id)
        job = api.ok(api.get(f"/jobs/{job_id}"))
        assert job["status"] == "failed"
        assert "changed since it was registered" in job["error"]
        assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] != "completed"
    finally:
        fresh.close()
    # The API process loads it on its first prediction: refused too, as a 503 problem.
    refused = problem(api.post(f"/models/{model_id}/predict", {"texts": ["good"]}), 503)
    assert "changed since it was registered" in refused["detail"]
    assert refused["base_model"] == "bert-3"


def test_one_catalogue_serves_three_bases_within_its_memory_bound(
    api: Api, db: sessionmaker[Session], settings: Settings, folders: dict[str, Path]
) -> None:
    """Models on three base models, trained and served by one engine catalogue whose bound
    holds two of them: every answer comes, and the bytes held never pass the bound."""
    for name in ("bert-3", "roberta-4"):
        _register(db, settings, name, folders[name])
    assert settings.backbone_path is not None
    bases = {TINY_BASE: settings.backbone_path, "bert-3": folders["bert-3"]}
    bases["roberta-4"] = folders["roberta-4"]
    sizes = {name: load_backbone(folder).memory_bytes for name, folder in bases.items()}
    limit = sum(sorted(sizes.values())[-2:])  # room for the two largest, never for all three
    assert limit < sum(sizes.values())
    catalogue = EngineCatalogue(settings, limit_bytes=limit)
    worker = InProcessWorker(settings, engines=catalogue)
    registry = ServingRegistry(db, lambda: catalogue)
    held: list[int] = []
    try:
        models = {
            base: trained_model(
                api,
                worker,
                samples(N_SAMPLES),
                {"base_model": base, "n_slices": 2, "budget": 2},
            )
            for base in (TINY_BASE, "bert-3", "roberta-4")
        }
        held.append(catalogue.held_bytes)
        for _ in range(2):
            for base, model_id in models.items():
                served = registry.predict(uuid.UUID(model_id), ["good thing", "bad thing"])
                assert served.prediction.outputs.shape == (2, 2)
                assert catalogue.loaded[-1] == base  # the one in use is held
                held.append(catalogue.held_bytes)
                assert len(catalogue.loaded) == 2
    finally:
        worker.close()
    assert max(held) <= limit, (held, limit)
    assert max(held) > max(sizes.values())  # two bases at once: the bound is what limits it


def test_a_base_model_in_an_object_store_is_downloaded_once_by_digest(
    db: sessionmaker[Session],
    settings: Settings,
    folders: dict[str, Path],
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """`s3://bucket/prefix`: registration downloads the folder into
    `<data_dir>/base-models/<sha256>/` (named by the digest it checked), and an engine loads
    it from there, verified, without downloading it again."""
    client = s3_server.client()
    source = folders["bert-3"]
    for path in source.iterdir():
        client.upload_file(str(path), s3_bucket, f"models/bert-3/{path.name}")
    on_s3 = settings.model_copy(update={"s3_endpoint_url": s3_server.endpoint_url})
    uri = s3_server.url(s3_bucket, "models/bert-3")
    with unit_of_work(db) as session:
        base = register(session, on_s3, "bert-3-s3", uri)
        key = BaseModelKey.of(base)
    assert (key.uri, key.sha256) == (uri, weights_digest(source))
    local = settings.data_dir.resolve() / "base-models" / key.sha256
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in source.iterdir())
    assert [p.name for p in local.parent.iterdir()] == [key.sha256]  # nothing half-written

    for path in source.iterdir():  # gone from the bucket: the local copy is what loads
        client.delete_object(Bucket=s3_bucket, Key=f"models/bert-3/{path.name}")
    engine = EngineCatalogue(on_s3).engine(key)
    assert engine.backbone.n_layers == 3


def test_the_migration_points_existing_models_at_the_registered_default(
    fresh_db: FreshDatabase,
) -> None:
    """Models created before the catalogue get the deployment's backbone, registered under
    the default name with the digest of its files."""
    url = fresh_db.empty_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            tenant = TenantRepository.from_session(session).create("t")
            model_id = make_model(session, tenant).id
        migrate.downgrade(url, BEFORE_CATALOGUE)
        migrate.upgrade(url)
        with unit_of_work(make_session_factory(engine)) as session:
            model = ModelRepository.from_session(session).get(model_id)
            base = model.base_model
            described = (base.name, base.family, base.n_layers, base.sha256, base.uri)
    finally:
        engine.dispose()
    folder = default_folder(get_settings())
    assert described == ("minilm-l6", "bert", 6, weights_digest(folder), str(folder))
