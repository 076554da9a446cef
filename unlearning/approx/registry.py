"""The approximate methods, by name: one registry that everything else reads.

Each method module registers its methods with :func:`method`, a decorator on one adapter
function of the :class:`RunPass` signature ``run(model, data, config)``::

    @method("ssd", config=SSDConfig, reads_statistics=True, description="...")
    def run_ssd(model: PrefixModel, data: PassData, config: SSDConfig) -> SSDResult: ...

An entry (:class:`MethodSpec`) holds the name, the tasks and the modalities (text, image) the
method fits (and, for one that does not fit every task, what it ``needs`` that the others have
not: a refusal names it), its config class (a
frozen dataclass validated in ``__post_init__``, whose fields a caller may override by name:
:meth:`MethodSpec.configure`), whether it reads the prefix's pass statistics instead of the
retain set, whether it reads the forget set's labels, what forget set it unlearns, and a
one-line description (the table of methods in ``docs/unlearning-methods.md``: ``python -m
unlearning.approx.registry --markdown`` prints it, ``--readme docs/unlearning-methods.md``
rewrites it there). Registering a name twice raises.

The registry imports the modules of :data:`METHOD_MODULES` the first time it is read, so that
they register; their order is the order of the methods (the API's enum, the table of methods).
**A new method** is one module that registers it and one line in :data:`METHOD_MODULES`.
:mod:`unlearning.approx.prefix_pass` runs a method by name; the service's schemas, database
validation and the benches take their names from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args, get_origin, get_type_hints

from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.model import PrefixModel
from unlearning.approx.statistics import PassStatistics
from unlearning.families import Modality
from unlearning.s3t.config import Task

#: The modules that register methods, imported in this order when the registry is first read.
METHOD_MODULES = (
    "unlearning.approx.ssd",
    "unlearning.approx.iau",
    "unlearning.approx.baselines",
    "unlearning.approx.gradient_ascent",
    "unlearning.approx.npo",
    "unlearning.approx.sparsity",
    "unlearning.approx.saliency",
    "unlearning.approx.regression",
    "unlearning.approx.laf",
    "unlearning.approx.concepts",
    "unlearning.approx.suppression",
)

#: What forget set a method unlearns: any samples; the classes present in it (every one of its
#: classes is forgotten, another must remain); or whole classes (every sample of each of its
#: classes is in it).
Forgets = Literal["samples", "classes", "whole_classes"]
BOTH_TASKS = frozenset({Task.CLASSIFICATION, Task.REGRESSION})
#: Every task: a method that reads only a loss (and its gradients) fits a causal LM too, whose
#: outputs are next-token logits and whose loss is on the response tokens. A method must declare
#: :attr:`Task.CAUSAL_LM` to fit one: the default is :data:`BOTH_TASKS`.
ALL_TASKS = frozenset(Task)
#: What a method made for classification or regression only needs that the other tasks have
#: not, unless it says more (``needs=``).
DEFAULT_NEEDS = {
    frozenset({Task.CLASSIFICATION}): "class labels",
    frozenset({Task.REGRESSION}): "regression targets",
    BOTH_TASKS: "a trained task head's outputs",
}
#: Every modality a base model may have. A method that works through the backbone's family
#: interface only (encode, run, pool: what every registered method does) fits them all; one that
#: reads what only one modality has (token ids, a vocabulary, pixels) declares that one.
ALL_MODALITIES = frozenset(Modality)

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


class UnknownMethodError(UnlearningInputError):
    """No method is registered under this name."""


class DuplicateMethodError(ValueError):
    """A second method was registered under a name already taken."""


class MethodConfigError(ValueError):
    """A method's config override names an unknown setting or a value it refuses."""


@dataclass(frozen=True)
class PassData:
    """What a pass reads besides the model: the forget set, the retain set (None when the
    prefix's ``statistics`` stand for it; they are given only to methods that read them) and the
    model's class count (1 for regression)."""

    forget: Examples
    retain: Examples | None
    statistics: PassStatistics | None
    n_labels: int

    def retain_set(self) -> Examples:
        if self.retain is None:
            raise UnlearningInputError("this method needs the retain set")
        return self.retain


class RunPass(Protocol[C_contra]):
    """Unlearn ``data.forget`` from ``model``'s editable stages, in place, with ``config``;
    returns whatever the method reports (benches print it; the service ignores it)."""

    def __call__(self, model: PrefixModel, data: PassData, config: C_contra, /) -> object: ...


@dataclass(frozen=True)
class MethodSpec(Generic[C]):
    """One registered method."""

    name: str
    config: type[C]
    run: RunPass[C]
    description: str
    tasks: frozenset[Task] = BOTH_TASKS
    reads_statistics: bool = False
    reads_labels: bool = True
    forgets: Forgets = "samples"
    modalities: frozenset[Modality] = ALL_MODALITIES
    #: For a method that does not fit every task: what it reads that the others have not
    #: (derived for classification or regression only: :data:`DEFAULT_NEEDS`).
    needs: str = ""

    @property
    def module(self) -> str:
        return str(getattr(self.run, "__module__", ""))

    def unfit(self, task: Task, modality: Modality) -> str | None:
        """Why this method cannot unlearn from a model of ``task`` on a base model of
        ``modality``, or None when it can (a model is refused at creation with this reason)."""
        if modality not in self.modalities:
            kinds = " and ".join(sorted(m.value for m in self.modalities))
            return f"`{self.name}` works on {kinds} models only, not on {modality.value} models"
        if task in self.tasks:
            return None
        if self.tasks == {Task.CLASSIFICATION} and task == Task.REGRESSION:
            return f"`{self.name}` needs a classification model"
        if self.tasks == {Task.REGRESSION} and task == Task.CLASSIFICATION:
            return f"`{self.name}` is made for regression models"
        return (
            f"`{self.name}` does not fit a {task.value} model: it needs {self.what_it_needs}, "
            f"which a {task.value} model has not"
        )

    @property
    def what_it_needs(self) -> str:
        """What the method reads that the tasks it does not fit lack ("" when it fits all)."""
        if self.tasks == ALL_TASKS:
            return ""
        return self.needs or DEFAULT_NEEDS.get(self.tasks, "")

    def configure(self, overrides: Mapping[str, Any] | None = None) -> C:
        """The method's config with ``overrides`` (setting name to a JSON-like value) over its
        defaults. MethodConfigError, naming the setting, for an unknown one or a bad value."""
        overrides = dict(overrides or {})
        fields = _fields(self.config)
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise MethodConfigError(
                f"`{unknown[0]}` is not a setting of `{self.name}`; "
                f"its settings are {', '.join(fields)}"
            )
        values = {key: _coerce(key, fields[key], value) for key, value in overrides.items()}
        try:
            return self.config(**values)
        except (TypeError, ValueError) as error:
            message = str(error)
            if not any(f"`{key}`" in message for key in values):  # name what was given
                message += f" (given: {', '.join(f'`{key}`' for key in sorted(values))})"
            raise MethodConfigError(message) from error

    def settings(self, config: object) -> dict[str, Any]:
        """``config`` as JSON-ready values, every setting; :meth:`configure` reads them back."""
        if not isinstance(config, self.config):
            raise TypeError(f"`{self.name}` takes a {self.config.__name__}")
        return {name: _plain(getattr(config, name)) for name in _fields(self.config)}


class Registry:
    """Methods by name, in the order of their modules in ``modules`` (then registration)."""

    def __init__(self, modules: Sequence[str] = ()) -> None:
        self._modules = tuple(modules)
        self._specs: dict[str, MethodSpec[Any]] = {}
        self._order: dict[str, tuple[int, int]] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, spec: MethodSpec[C]) -> MethodSpec[C]:
        """Add ``spec``; DuplicateMethodError when its name is taken."""
        _check_config(spec.name, spec.config)
        if not spec.tasks or not spec.tasks <= ALL_TASKS:
            raise ValueError(f"`{spec.name}`: tasks must be some of {sorted(ALL_TASKS)}")
        if spec.tasks == ALL_TASKS and spec.needs:
            raise ValueError(f"`{spec.name}` fits every task: it `needs` nothing more")
        if spec.tasks != ALL_TASKS and not spec.what_it_needs:
            raise ValueError(f"`{spec.name}`: say what it `needs` that the tasks it misses lack")
        if not spec.modalities or not spec.modalities <= ALL_MODALITIES:
            raise ValueError(f"`{spec.name}`: modalities must be some of {sorted(ALL_MODALITIES)}")
        if spec.forgets not in get_args(Forgets):
            raise ValueError(f"`{spec.name}`: forgets must be one of {get_args(Forgets)}")
        if not spec.name.isidentifier() or spec.name == "auto" or len(spec.name) > 32:
            raise ValueError(f"{spec.name!r} cannot name a method (an identifier, not `auto`)")
        with self._lock:
            if spec.name in self._specs:
                taken = self._specs[spec.name].module
                raise DuplicateMethodError(f"`{spec.name}` is already registered (by {taken})")
            modules = self._modules
            position = modules.index(spec.module) if spec.module in modules else len(modules)
            self._order[spec.name] = (position, len(self._order))
            self._specs[spec.name] = spec
        return spec

    def method(
        self,
        name: str,
        *,
        config: type[C],
        description: str,
        tasks: Iterable[Task] = BOTH_TASKS,
        reads_statistics: bool = False,
        reads_labels: bool = True,
        forgets: Forgets = "samples",
        modalities: Iterable[Modality] = ALL_MODALITIES,
        needs: str = "",
    ) -> Callable[[RunPass[C]], RunPass[C]]:
        """Register the decorated adapter function as method ``name``."""

        def decorate(run: RunPass[C]) -> RunPass[C]:
            self.register(
                MethodSpec(
                    name=name,
                    config=config,
                    run=run,
                    description=description,
                    tasks=frozenset(tasks),
                    reads_statistics=reads_statistics,
                    reads_labels=reads_labels,
                    forgets=forgets,
                    modalities=frozenset(modalities),
                    needs=needs,
                )
            )
            return run

        return decorate

    def _load(self) -> None:
        # No lock held while importing: a module being imported by another thread registers
        # under the lock, and import_module returns only once the module has run.
        if not self._loaded:
            for module in self._modules:
                importlib.import_module(module)
            self._loaded = True

    def specs(self) -> list[MethodSpec[Any]]:
        self._load()
        return [self._specs[name] for name in sorted(self._specs, key=self._order.__getitem__)]

    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs())

    def get(self, name: str) -> MethodSpec[Any]:
        """The method called ``name``; UnknownMethodError (an UnlearningInputError) if none."""
        self._load()
        spec = self._specs.get(name)
        if spec is None:
            raise UnknownMethodError(
                f"no approximate method `{name}`; the methods are {', '.join(self.names())}"
            )
        return spec

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._specs

    def __iter__(self) -> Iterator[MethodSpec[Any]]:
        return iter(self.specs())


#: The registry every method module registers in.
REGISTRY = Registry(METHOD_MODULES)
method = REGISTRY.method
get = REGISTRY.get
names = REGISTRY.names
specs = REGISTRY.specs

#: A method's name: one of :func:`names`.
MethodName = str


def markdown_table(registry: Registry = REGISTRY) -> str:
    """The table of methods of ``docs/unlearning-methods.md``, one row per registered method."""
    lines = [
        "| method | module | config | what it does | fits | causal LM | modalities "
        "| reads labels | reads statistics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in registry.specs():
        # Classification and regression; the causal LM column says whether, or why not.
        encoders = spec.tasks & BOTH_TASKS
        fits = "both" if encoders == BOTH_TASKS else ", ".join(t.value for t in encoders) or "-"
        causal = "yes" if Task.CAUSAL_LM in spec.tasks else f"no: needs {spec.what_it_needs}"
        # In the enum's order (text, image), not alphabetical.
        modalities = ", ".join(m.value for m in Modality if m in spec.modalities)
        module = spec.module.rsplit(".", 1)[-1]
        lines.append(
            f"| `{spec.name}` | `{module}.py` | `{spec.config.__name__}` | {spec.description} "
            f"| {fits} | {causal} | {modalities} | {_yes(spec.reads_labels)} "
            f"| {_yes(spec.reads_statistics)} |"
        )
    return "\n".join(lines) + "\n"


#: The lines around the table of methods in a Markdown file (the first one continues with a
#: comment).
TABLE_BEGIN, TABLE_END = "<!-- approx-methods: begin", "<!-- approx-methods: end -->"


def table_in(text: str) -> str:
    """The table between the markers of a Markdown file's text."""
    _, begin, rest = text.partition(TABLE_BEGIN)
    table, end, _ = rest.partition("\n")[2].partition(TABLE_END)
    if not (begin and end):
        raise ValueError(f"no {TABLE_BEGIN} ... {TABLE_END} in the text")
    return table


def with_table(text: str, table: str) -> str:
    """``text`` with ``table`` between its markers."""
    old = table_in(text)
    head, begin, rest = text.partition(TABLE_BEGIN)
    marker_line, _, body = rest.partition("\n")
    return head + begin + marker_line + "\n" + table + body.removeprefix(old)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The registered approximate methods.")
    parser.add_argument(
        "--markdown", action="store_true", help="print the table of methods (Markdown)"
    )
    parser.add_argument(
        "--readme",
        type=Path,
        help="write the table of methods into this Markdown file, in place, between its markers "
        "(docs/unlearning-methods.md)",
    )
    args = parser.parse_args(argv)
    if args.readme:
        text = args.readme.read_text(encoding="utf-8")
        args.readme.write_text(with_table(text, markdown_table()), encoding="utf-8")
    elif args.markdown:
        sys.stdout.write(markdown_table())
    else:
        sys.stdout.write("".join(f"{name}\n" for name in names()))


def _fields(config: type[Any]) -> dict[str, Any]:
    """A config class's settings (its init fields) and their types."""
    hints = get_type_hints(config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config) if f.init}


def _check_config(name: str, config: type[Any]) -> None:
    """A method's config: a dataclass with defaults for every setting, of JSON-like types."""
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise TypeError(f"`{name}`: the config must be a dataclass, got {config!r}")
    for field, annotation in _fields(config).items():
        if not _supported(annotation):
            raise TypeError(f"`{name}`: setting `{field}` has a type a request cannot give")
    config()  # every setting has a default, and the defaults are valid


def _supported(annotation: Any) -> bool:
    if annotation in (bool, int, float, str):
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return all(isinstance(a, str) for a in args)
    if origin is tuple:
        return bool(args) and Ellipsis not in args and all(_supported(a) for a in args)
    return False


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    """``value`` as setting ``name`` of type ``annotation`` takes it, from JSON-like input."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise MethodConfigError(f"`{name}` must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise MethodConfigError(f"`{name}` must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value) if abs(value) < 2**1023 else math.inf  # no OverflowError
            if math.isfinite(number):
                return number
        raise MethodConfigError(f"`{name}` must be a finite number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise MethodConfigError(f"`{name}` must be a string, got {value!r}")
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise MethodConfigError(f"`{name}` must be one of {', '.join(args)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(_coerce(name, a, v) for a, v in zip(args, value, strict=True))
        raise MethodConfigError(f"`{name}` must be a list of {len(args)} values, got {value!r}")
    raise MethodConfigError(f"`{name}` cannot be set")  # refused at registration already


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


if __name__ == "__main__":  # run as a script: read the registry the method modules fill
    from unlearning.approx import registry as _registry

    _registry.main()
