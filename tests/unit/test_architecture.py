"""Dependency direction: unlearning/ is a library; routes hold no SQL; tasks stay thin; the
lineage rules (service/lineage/) are pure."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _files("unlearning"), ids=lambda p: str(p.relative_to(ROOT)))
def test_unlearning_imports_no_web_database_or_celery(path: Path) -> None:
    banned = {
        "service",
        "workers",
        "fastapi",
        "starlette",
        "sqlalchemy",
        "alembic",
        "celery",
        "kombu",
        "redis",
        "psycopg",
    }
    assert not (_imports(path) & banned)


@pytest.mark.parametrize(
    "path",
    [p for p in _files("service/api") if p.name != "deps.py"]
    + sorted((ROOT / "service").glob("*/endpoints.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_routes_hold_no_sql(path: Path) -> None:
    assert "sqlalchemy" not in _imports(path)


def _modules(path: Path) -> set[str]:
    """The dotted names of the absolute imports of a file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _files("service/lineage"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_lineage_rules_are_pure(path: Path) -> None:
    """Plain rows in, decisions out: no database, session, web, broker or torch."""
    banned = {"sqlalchemy", "service.db", "fastapi", "starlette", "celery", "redis", "torch"}
    found = {m for m in _modules(path) for b in banned if m == b or m.startswith(f"{b}.")}
    assert not found


def test_the_scan_sees_imports() -> None:
    assert {"sqlalchemy", "service"} <= _imports(
        ROOT / "service" / "db" / "repositories" / "lineage.py"
    )
    assert _files("service/lineage")
    assert "service.db.hashing" in _modules(ROOT / "service" / "db" / "repositories" / "lineage.py")


@pytest.mark.parametrize(
    "path", _files("client/unlearn_client"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_client_stands_alone(path: Path) -> None:
    """client/ is its own distribution (httpx only): it imports nothing of the service."""
    assert _imports(path) - sys.stdlib_module_names <= {"httpx", "unlearn_client"}


#: The service's floors, top to bottom. A module imports its own floor and those below, never a
#: floor above: the use cases (deletions, models) plan work through the job domains; their
#: runners report what a finished job means for its deletions to settlement (``service.jobs``),
#: below them, so nothing beneath the deletions domain calls back up into it. Modules outside
#: every floor (settings, errors, engine, api, queues) are the house's utilities.
FLOORS: list[tuple[str, ...]] = [
    ("service.app", "service.cli", "service.dashboard", "service.demo", "service.housekeeping"),
    ("service.deletions", "service.models", "service.generation"),
    ("service.approximation", "service.exactness"),
    ("service.training",),
    ("service.jobs",),
    ("service.webhooks", "service.serving", "service.artifacts", "service.db", "service.lineage"),
]


def _floor(module: str) -> int | None:
    for index, floor in enumerate(FLOORS):
        if any(module == name or module.startswith(f"{name}.") for name in floor):
            return index
    return None


def _service_modules() -> list[Path]:
    return [p for p in _files("service") if _floor(_dotted(p)) is not None]


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", _service_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_reaches_a_floor_above(path: Path) -> None:
    mine = _floor(_dotted(path))
    assert mine is not None
    above = sorted(m for m in _modules(path) if (f := _floor(m)) is not None and f < mine)
    assert not above, f"{_dotted(path)} reaches up to {above}"


def test_the_floors_see_the_knot_that_was() -> None:
    """The rule sees what it forbids: the runners once imported the deletions' lifecycle, and
    the lifecycle the retrain scheduling."""
    assert _floor("service.deletions.lifecycle") == 1
    assert _floor("service.training.runner") == 3
    assert _floor("service.jobs.settlement") == 4
    assert _floor("service.settings") is None
