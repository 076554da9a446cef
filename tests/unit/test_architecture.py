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
    ("service.quality",),
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
    assert _floor("service.training.runner") == 4
    assert _floor("service.jobs.settlement") == 5
    assert _floor("service.settings") is None


# --- Floors: service/ never reaches up into workers/; settings hold settings; one commit rule.


def _reaches(path: Path, package: str) -> set[str]:
    """The imports of ``package`` or its modules anywhere in a file (inside functions and under
    ``TYPE_CHECKING`` too: ``ast.walk`` visits every node), relative ones included."""
    found = {m for m in _modules(path) if m == package or m.startswith(f"{package}.")}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add("." * node.level + (node.module or ""))
    return found


@pytest.mark.parametrize("path", _files("service"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_service_imports_nothing_of_the_workers(path: Path) -> None:
    """The workers build on the service (``service.producer`` is the Celery app every sender
    uses; a worker adds its signals and tasks), never the reverse: an API or housekeeper process
    loads no worker presence, device or task code."""
    assert not {m for m in _reaches(path, "workers") if not m.startswith(".")}


def test_the_settings_import_no_domain_and_no_library() -> None:
    """``service/settings.py`` is the bottom floor: every module may read it, so it reads none
    (no domain object built from settings, no torch): domain objects build themselves from the
    settings (``RetrainPolicy.from_settings``, ``ApproximationSettings.from_settings``)."""
    path = ROOT / "service" / "settings.py"
    reached = {p: _reaches(path, p) for p in ("service", "unlearning", "workers")}
    assert reached == {"service": set(), "unlearning": set(), "workers": set()}


#: Who may call ``.commit()`` under service/ and workers/: the owners of a transaction.
COMMIT_OWNERS = {
    # unit_of_work: the one transaction boundary of a request (via SessionDep), a worker's step
    # (workers/runtime.transaction), the relay's, housekeeper's and leader's rounds, the CLI.
    "service/db/engine.py",
    # end_read: the one way a route ends its read early, before the model computes.
    "service/api/deps.py",
}


def _commits(path: Path) -> list[int]:
    """The lines of the calls ``<anything>.commit(...)`` in a file."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "commit"
    ]


def _not_owners() -> list[Path]:
    files = _files("service") + _files("workers")
    return [p for p in files if str(p.relative_to(ROOT)) not in COMMIT_OWNERS]


@pytest.mark.parametrize("path", _not_owners(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_transaction_owners_commit(path: Path) -> None:
    """One commit rule: a route's transaction ends with its SessionDep (or ``end_read``), a
    worker's and every background round's with ``unit_of_work``; services, repositories, routes
    and tasks never commit, so nothing is committed half-done and every commit wakes what its
    transaction marked (``service.db.after_commit``)."""
    assert not _commits(path)


def test_the_floor_scans_see_what_they_guard() -> None:
    assert set(_commits(ROOT / "service" / "db" / "engine.py"))
    assert set(_commits(ROOT / "service" / "api" / "deps.py"))
    assert {str(p.relative_to(ROOT)) for p in _files("service")} >= COMMIT_OWNERS
    assert _reaches(ROOT / "workers" / "app.py", "workers") == {"workers.celery_app"}
    assert "service.producer" in _reaches(ROOT / "workers" / "celery_app.py", "service")
