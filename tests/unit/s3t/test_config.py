from __future__ import annotations

import pytest

from unlearning.s3t import S3TConfig


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n_shards": 0}, "n_shards"),
        ({"n_slices": -1}, "n_slices"),
        ({"budget": 0}, "budget"),
        ({"budget": True}, "budget"),
        ({"batch_size": 1}, "batch_size"),
        ({"sequence_strategy": "random"}, "sequence_strategy"),
        ({"schedule": "bottom-up"}, "schedule"),
        ({"task": "ranking"}, "task"),
        ({"n_labels": 1}, "n_labels"),
        ({"task": "regression", "n_labels": 3}, "n_labels"),
        ({"task": "causal_lm", "n_labels": 2}, "n_labels"),
        ({"use_rslora": "yes"}, "use_rslora"),
        ({"lora_alpha": 0.0}, "lora_alpha"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"target_modules": ()}, "target_modules"),
        ({"seed": -1}, "seed"),
        ({"gradient_checkpointing": 1}, "gradient_checkpointing"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing"),
        ({"deletion_prior": (0.5, 0.5, 0.0, 0.0)}, "deletion_prior"),  # needs bipartite
        ({"sequence_strategy": "bipartite", "deletion_prior": (0.5, 0.5)}, "deletion_prior"),
        (
            {"sequence_strategy": "bipartite", "deletion_prior": (0.5, 0.5, 0.5, 0.5)},
            "deletion_prior",
        ),
    ],
)
def test_invalid_settings_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        S3TConfig(**changes)  # type: ignore[arg-type]


def test_round_trips_through_json_ready_dict() -> None:
    config = S3TConfig(
        sequence_strategy="bipartite",  # type: ignore[arg-type]
        deletion_prior=(0.1, 0.2, 0.3, 0.4),
        target_modules=("query", "key", "value"),
    )
    data = config.to_dict()
    assert data["sequence_strategy"] == "bipartite"
    assert data["target_modules"] == ["query", "key", "value"]
    assert S3TConfig.from_dict(data) == config


def test_from_dict_refuses_unknown_settings() -> None:
    with pytest.raises(ValueError, match="unknown S3T settings: layers"):
        S3TConfig.from_dict({"layers": 3})


def test_gradient_checkpointing_is_off_by_default_and_stored_only_when_on() -> None:
    plain = S3TConfig()
    assert plain.gradient_checkpointing is False
    # Models stored before the flag existed read back as they were (no new key).
    assert "gradient_checkpointing" not in plain.to_dict()
    assert S3TConfig.from_dict(plain.to_dict()) == plain
    on = S3TConfig(gradient_checkpointing=True)
    assert on.to_dict()["gradient_checkpointing"] is True
    assert S3TConfig.from_dict(on.to_dict()) == on


def test_rank_stabilised_lora_scales_by_the_square_root_of_the_rank() -> None:
    assert S3TConfig(lora_rank=16, lora_alpha=32.0).lora_scaling == 2.0
    assert S3TConfig(lora_rank=16, lora_alpha=32.0, use_rslora=True).lora_scaling == 8.0
    assert S3TConfig(task="causal_lm", n_labels=1).output_dim == 0  # type: ignore[arg-type]
