"""The method registry: one entry per method, duplicates refused, every config validated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, get_args, get_origin

import pytest

from unlearning.approx import registry
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import (
    ALL_TASKS,
    DuplicateMethodError,
    MethodConfigError,
    MethodSpec,
    PassData,
    Registry,
    UnknownMethodError,
)
from unlearning.approx.sparsity import PruneThenUnlearnConfig
from unlearning.families import Modality
from unlearning.s3t.config import Task

SPECS = registry.specs()
#: The methods of this commit, in their order (a method added since may come anywhere).
KNOWN = (
    "ssd",
    "iau",
    "finetune",
    "random_labels",
    "gradient_ascent",
    "npo",
    "l1_sparse",
    "prune_then_unlearn",
    "salun",
    "rbm",
    "blindspot",
    "gaussian_finetune",
    "laf",
    "concept_poisoning",
    "suppress_class",
    "refit_head",
)


@dataclass(frozen=True)
class ToyConfig:
    step: float = 0.1

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise ValueError("`step` must be positive")


def _toy(model: PrefixModel, data: PassData, config: ToyConfig) -> None:
    """A method that does nothing (the registry never runs it here)."""


def test_a_name_is_registered_once() -> None:
    toys = Registry()
    toys.method("toy", config=ToyConfig, description="does nothing")(_toy)
    assert toys.names() == ("toy",) and toys.get("toy").run is _toy
    with pytest.raises(DuplicateMethodError, match="`toy` is already registered"):
        toys.method("toy", config=ToyConfig, description="again")(_toy)
    with pytest.raises(DuplicateMethodError):
        registry.REGISTRY.register(dataclasses.replace(registry.get("ssd")))
    assert toys.names() == ("toy",) and registry.names().count("ssd") == 1


def test_a_registration_is_checked() -> None:
    toys = Registry()
    lm_and_classes = {Task.CLASSIFICATION, Task.CAUSAL_LM}

    @dataclass(frozen=True)
    class Untyped:
        weights: list[float] = dataclasses.field(default_factory=list)

    @dataclass(frozen=True)
    class NoDefault:
        step: float

    with pytest.raises(TypeError, match="`weights` has a type a request cannot give"):
        toys.method("untyped", config=Untyped, description="")(_toy)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        toys.method("no_default", config=NoDefault, description="")(_toy)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot name a method"):
        toys.method("auto", config=ToyConfig, description="")(_toy)
    with pytest.raises(ValueError, match="tasks"):
        toys.method("no_task", config=ToyConfig, description="", tasks=())(_toy)
    # A method that misses a task says what it needs; one that fits all needs nothing more.
    with pytest.raises(ValueError, match="needs"):
        toys.method("vague", config=ToyConfig, description="", tasks=lm_and_classes)(_toy)
    with pytest.raises(ValueError, match="needs"):
        toys.method("all", config=ToyConfig, description="", tasks=ALL_TASKS, needs="x")(_toy)
    assert toys.names() == ()
    toys.method("lm", config=ToyConfig, description="", tasks=lm_and_classes, needs="a y")(_toy)
    assert toys.get("lm").unfit(Task.REGRESSION, Modality.TEXT) == (
        "`lm` does not fit a regression model: it needs a y, which a regression model has not"
    )


def test_the_methods_in_their_modules_order() -> None:
    assert tuple(n for n in registry.names() if n in KNOWN) == KNOWN  # and any added since
    modules = [registry.METHOD_MODULES.index(s.module) for s in SPECS]
    assert modules == sorted(modules)  # in the order of METHOD_MODULES
    assert set(modules) == set(range(len(registry.METHOD_MODULES)))  # each registers some
    with pytest.raises(UnknownMethodError, match="no approximate method `nope`"):
        registry.get("nope")
    assert "ssd" in registry.REGISTRY and "nope" not in registry.REGISTRY


def test_what_each_method_declares() -> None:
    by_name = {s.name: s for s in SPECS if s.name in KNOWN}
    assert set(by_name) == set(KNOWN)
    assert {n for n, s in by_name.items() if s.reads_statistics} == {
        "ssd",
        "iau",
        "suppress_class",
        "refit_head",
    }
    assert {n for n, s in by_name.items() if s.tasks == {Task.CLASSIFICATION}} == {
        "random_labels",
        "salun",
        "concept_poisoning",
        "suppress_class",
        "refit_head",
    }
    assert {n for n, s in by_name.items() if s.tasks == {Task.REGRESSION}} == {
        "blindspot",
        "gaussian_finetune",
    }
    assert {n for n, s in by_name.items() if not s.reads_labels} == {"laf"}
    assert {n for n, s in by_name.items() if Task.CAUSAL_LM in s.tasks} == {
        "ssd",
        "iau",
        "finetune",
        "gradient_ascent",
        "npo",
        "l1_sparse",
        "prune_then_unlearn",
        "rbm",
    }
    for spec in SPECS:  # every refusal of a causal LM says what the method needs
        reason = spec.unfit(Task.CAUSAL_LM, Modality.TEXT)
        assert reason is None or f"it needs {spec.what_it_needs}, which" in reason
    assert by_name["random_labels"].unfit(Task.REGRESSION, Modality.TEXT) == (
        "`random_labels` needs a classification model"
    )
    assert by_name["blindspot"].unfit(Task.CLASSIFICATION, Modality.IMAGE) == (
        "`blindspot` is made for regression models"
    )
    assert all(s.description and "|" not in s.description for s in SPECS)


def _wrong_type(annotation: Any) -> list[Any]:
    """Values of the wrong type (or out of a Literal's choices) for a setting."""
    if annotation is bool:
        return [1, "true", None]
    if annotation is int:
        return [1.5, True, "1", None]
    if annotation is float:
        return ["1", True, None, float("nan"), float("inf")]
    if annotation is str:
        return [1, None]
    if get_origin(annotation) is tuple:
        return [1, [1] * (len(get_args(annotation)) + 1), ["a"] * len(get_args(annotation))]
    return ["not-a-choice", 1, None]  # a Literal of strings


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_config_validates_bad_input(spec: MethodSpec[Any]) -> None:
    assert spec.configure() == spec.config() == spec.configure({})
    with pytest.raises(MethodConfigError, match="`nope` is not a setting of"):
        spec.configure({"nope": 1})
    fields = registry._fields(spec.config)
    for name, annotation in fields.items():
        for value in _wrong_type(annotation):
            with pytest.raises(MethodConfigError, match=f"`{name}`"):
                spec.configure({name: value})
    # Every config refuses some value of the right type (its __post_init__ checks ranges).
    refused = {}
    for name, annotation in fields.items():
        for value in (-1, 0) if annotation in (int, float) else ():
            try:
                spec.configure({name: value})
            except MethodConfigError as error:
                refused[name] = str(error)
    assert refused, f"{spec.config.__name__} accepts -1 and 0 for every number"
    assert all(f"`{name}`" in message for name, message in refused.items()), refused


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_config_round_trips_through_its_settings(spec: MethodSpec[Any]) -> None:
    config = spec.configure()
    settings = spec.settings(config)
    assert set(settings) == set(registry._fields(spec.config))
    assert spec.configure(settings) == config


def test_overrides_are_coerced_from_json() -> None:
    ssd = registry.get("ssd")
    assert ssd.configure({"alpha": 5}).alpha == 5.0
    assert isinstance(ssd.configure({"alpha": 5}).alpha, float)
    with pytest.raises(MethodConfigError, match="`alpha` must be positive"):
        ssd.configure({"alpha": 0})
    with pytest.raises(MethodConfigError, match="`alpha` must be a finite number"):
        ssd.configure({"alpha": 10**400})
    laf = registry.get("laf")
    assert laf.configure({"vae_hidden": [64, 16]}).vae_hidden == (64, 16)
    assert laf.settings(laf.configure())["vae_hidden"] == [128, 32]
    rbm = registry.get("rbm")
    assert rbm.configure({"variant": "masked_finetune"}).variant == "masked_finetune"
    with pytest.raises(TypeError):
        rbm.settings(registry.get("ssd").configure())


def test_prune_then_unlearn_takes_one_config_for_both_steps() -> None:
    config = PruneThenUnlearnConfig(sparsity=0.5, epochs=3, alpha=0.0)
    assert (config.prune.sparsity, config.l1.epochs, config.l1.alpha) == (0.5, 3, 0.0)
    with pytest.raises(ValueError, match="`sparsity`"):
        PruneThenUnlearnConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="`no_l1_epochs`"):
        PruneThenUnlearnConfig(epochs=2, no_l1_epochs=3)


def test_the_markdown_table_lists_every_method() -> None:
    table = registry.markdown_table().splitlines()
    assert table[0].startswith("| method | module | config |")
    assert [line.split(" | ")[0] for line in table[2:]] == [f"| `{n}`" for n in registry.names()]
    assert table[2].startswith("| `ssd` | `ssd.py` | `SSDConfig` |")
    assert table[0].endswith("| fits | causal LM | modalities | reads labels | reads statistics |")
    assert table[2].endswith("| both | yes | text, image | yes | yes |")
    salun = next(line for line in table if line.startswith("| `salun` |"))
    assert salun.endswith("| classification | no: needs class labels | text, image | yes | no |")
