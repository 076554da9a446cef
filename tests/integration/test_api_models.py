"""``/models`` over HTTP on SQLite and PostgreSQL: keys, tenants, validation, bulk samples."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.api import auth, problem
from unlearning.approx import registry
from unlearning.s3t.config import Task

pytestmark = pytest.mark.integration

MODEL = {"name": "news", "labels": ["business", "sports"], "n_shards": 2, "n_slices": 3}


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer ul_nope_nope"])
def test_calls_need_a_valid_key(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    problem(client.post("/models", json=MODEL, headers=headers), 401)


def test_create_and_read_a_model(client: TestClient, keys: dict[str, str]) -> None:
    response = client.post("/models", json={**MODEL, "budget": 2}, headers=auth(keys["a"]))
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["sequence_orders"] == [[0, 1, 2], [2, 0, 1]]
    assert model["config"]["lora_rank"] == 8 and "n_shards" not in model["config"]
    assert (model["status"], model["serving_generation"]) == ("created", 0)
    again = client.get(f"/models/{model['id']}", headers=auth(keys["a"]))
    assert again.json() == model
    # Another tenant's model does not exist for this key.
    problem(client.get(f"/models/{model['id']}", headers=auth(keys["b"])), 404)


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"budget": 0}, "budget"),
        ({"labels": ["only"]}, "labels"),
        ({"labels": None}, "labels"),
        ({"sequence_strategy": "bipartite", "deletion_prior": [0.5, 0.5]}, "deletion_prior"),
        ({"deletion_prior": [0.2, 0.3, 0.5]}, "deletion_prior"),
        ({"layers": 3}, "layers"),
        ({"task": "ranking"}, "task"),
        ({"n_slices": 7}, "the 6 layers of base model 'minilm-l6'"),
        ({"base_model": "nope"}, "registered: minilm-l6"),
    ],
)
def test_bad_model_settings_are_422_problems(
    client: TestClient, keys: dict[str, str], changes: dict[str, object], mentions: str
) -> None:
    body = problem(client.post("/models", json={**MODEL, **changes}, headers=auth(keys["a"])), 422)
    assert mentions in str(body)


def test_a_model_keeps_a_validated_method_config(client: TestClient, keys: dict[str, str]) -> None:
    body = {**MODEL, "approximate_method": "ssd", "method_config": {"alpha": 5, "dampening": 0.5}}
    response = client.post("/models", json=body, headers=auth(keys["a"]))
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["approximate_method"], model["method_config"]) == (
        "ssd",
        {"alpha": 5, "dampening": 0.5},
    )
    assert client.get(f"/models/{model['id']}", headers=auth(keys["a"])).json() == model
    plain = client.post("/models", json=MODEL, headers=auth(keys["a"])).json()
    assert (plain["approximate_method"], plain["method_config"]) == ("auto", None)


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"approximate_method": "ssd", "method_config": {"alpha": -1}}, "`alpha` must be"),
        ({"approximate_method": "ssd", "method_config": {"alpha": "x"}}, "`alpha` must be"),
        ({"approximate_method": "ssd", "method_config": {"nope": 1}}, "`nope` is not a setting"),
        ({"approximate_method": "rbm", "method_config": {"variant": "c"}}, "`variant` must be"),
        ({"approximate_method": "laf", "method_config": {"vae_hidden": [1]}}, "`vae_hidden`"),
        ({"method_config": {"alpha": 5}}, "`auto` chooses"),
        ({"approximate_method": "auto", "method_config": {"alpha": 5}}, "`auto` chooses"),
        ({"approximate_method": "nope"}, "approximate_method"),
    ],
)
def test_a_bad_method_config_is_a_422_problem(
    client: TestClient, keys: dict[str, str], changes: dict[str, object], mentions: str
) -> None:
    body = problem(client.post("/models", json={**MODEL, **changes}, headers=auth(keys["a"])), 422)
    assert mentions in str(body)


def test_the_openapi_enum_of_methods_is_the_registry(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    method = schemas["ModelCreate"]["properties"]["approximate_method"]
    assert method["enum"] == ["auto", *registry.names()]
    requested = schemas["DeletionCreate"]["properties"]["method"]["anyOf"]
    assert {"type": "string", "enum": ["auto", *registry.names()]} in requested
    assert "method_config" in schemas["DeletionCreate"]["properties"]
    # The help names the methods that fit a causal LM, as the registry says.
    causal = [s.name for s in registry.specs() if Task.CAUSAL_LM in s.tasks]
    assert {"ssd", "npo", "gradient_ascent"} <= set(causal)
    listed = ", ".join(f"`{name}`" for name in causal)
    assert f"fitting causal LMs: {listed} (" in method["description"]


def test_unknown_and_malformed_model_ids(client: TestClient, keys: dict[str, str]) -> None:
    problem(
        client.get("/models/00000000-0000-0000-0000-000000000000", headers=auth(keys["a"])), 404
    )
    problem(client.get("/models/not-a-uuid", headers=auth(keys["a"])), 422)


def test_samples_are_stored_and_bad_rows_reported(client: TestClient, keys: dict[str, str]) -> None:
    model = client.post("/models", json=MODEL, headers=auth(keys["a"])).json()
    rows = [
        {"external_id": "n1", "label": "business", "text": "stocks rally"},
        {"external_id": "n2", "label": "weather", "text": "rain"},
        {"external_id": "n1", "label": "sports", "text": "goal"},
        {"external_id": "n3", "label": "sports", "text": "cup final", "subject_id": "alice"},
    ]
    url = f"/models/{model['id']}/samples"
    result = client.post(url, json={"samples": rows}, headers=auth(keys["a"])).json()
    assert result["stored"] == 2
    assert [(e["row"], e["external_id"]) for e in result["errors"]] == [(1, "n2"), (2, "n1")]
    assert all(e["type"].startswith("https://") and e["detail"] for e in result["errors"])
    assert "appears twice in this batch (first at row 0)" in result["errors"][1]["detail"]
    again = client.post(url, json={"samples": rows[:1]}, headers=auth(keys["a"])).json()
    assert again["stored"] == 0 and "already registered" in again["errors"][0]["detail"]
    problem(client.post(url, json={"samples": rows}, headers=auth(keys["b"])), 404)
    problem(client.post(url, json={"samples": []}, headers=auth(keys["a"])), 422)


def test_rough_edges_of_sample_rows_are_answered_row_by_row(
    client: TestClient, keys: dict[str, str]
) -> None:
    """A label index is a label; NUL characters are a bad row, not a failed batch."""
    model = client.post("/models", json=MODEL, headers=auth(keys["a"])).json()
    url = f"/models/{model['id']}/samples"
    rows = [
        {"external_id": "i1", "label": 1, "text": "cup final"},
        {"external_id": "i2", "label": 1.0, "text": "cup final"},
        {"external_id": "i3", "label": "sports", "text": "cup\x00final"},
        {"external_id": "i4", "label": "business", "text": "stocks"},
    ]
    result = client.post(url, json={"samples": rows}, headers=auth(keys["a"])).json()
    assert result["stored"] == 2, result
    assert [(e["row"], e["external_id"]) for e in result["errors"]] == [(1, "i2"), (2, "i3")]
    assert "NUL characters" in result["errors"][1]["detail"]
    boolean = [{"external_id": "b1", "label": True, "text": "cup final"}]
    refused = problem(client.post(url, json={"samples": boolean}, headers=auth(keys["a"])), 422)
    assert "label" in str(refused)
