"""The lock check (`make lock-check`, in `make test`) against copies of the real lock files."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def load_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lockfile", ROOT / "requirements" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The lock module looking at a copy of the project's lock and pyproject files."""
    for name in ("pyproject.toml", "client/pyproject.toml", "constraints/cpu.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    module = load_lock_module()
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "LOCK_DIR", tmp_path / "requirements")
    monkeypatch.setattr(module, "CONSTRAINTS", tmp_path / "constraints" / "cpu.txt")
    monkeypatch.setattr(module, "TORCH", tmp_path / "requirements" / "torch-cpu.txt")
    return module


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_committed_lock_agrees_with_the_project(lock: ModuleType) -> None:
    assert lock.check() == []


def test_a_loosened_pin_fails(lock: ModuleType) -> None:
    run = lock.LOCK_DIR / "run.txt"
    pinned = next(line for line in run.read_text().splitlines() if line.startswith("redis=="))
    edit(run, pinned, "redis>=5 \\")
    assert any("`redis>=5` is not an exact pin" in p for p in lock.check())


def test_an_entry_without_a_hash_fails(lock: ModuleType) -> None:
    torch = lock.TORCH
    torch.write_text("\n".join(ln for ln in torch.read_text().splitlines() if "--hash" not in ln))
    assert any("has no --hash" in p for p in lock.check())


def test_a_dependency_added_to_pyproject_without_relocking_fails(lock: ModuleType) -> None:
    edit(lock.ROOT / "pyproject.toml", '  "click>=8.1",\n', '  "click>=8.1",\n  "attrs>=23",\n')
    problems = lock.check()
    assert any("run.txt was compiled from other requirements" in p for p in problems)


def test_a_lock_version_outside_pyproject_fails(lock: ModuleType) -> None:
    edit(lock.ROOT / "pyproject.toml", '"redis>=5"', '"redis>=5,<8"')
    assert any("pins redis==8.2.0: not `redis<8,>=5`" in p for p in lock.check())


def test_dev_and_run_locks_must_agree(lock: ModuleType) -> None:
    dev = lock.LOCK_DIR / "dev.txt"
    edit(dev, "redis==8.2.0", "redis==8.1.0")
    assert any("dev.txt pins redis==8.1.0, run.txt 8.2.0" in p for p in lock.check())


def test_what_the_service_imports_it_declares() -> None:
    """Every third-party package that unlearning/, service/, workers/ or migrations/ import is
    a runtime dependency in pyproject.toml, not only a dev one or a dependency of a dependency:
    `make run` installs requirements/run.txt alone (httpx, used by the webhook dispatcher,
    was once only in the dev extra, and `make run` failed to start)."""
    lock = load_lock_module()
    declared = {canonicalize_name(r.name) for r in lock.requirements(lock.RUN)}
    distributions = importlib.metadata.packages_distributions()
    first_party = {"unlearning", "service", "workers", "migrations", "unlearn_client"}
    missing: dict[str, str] = {}
    for package in ("unlearning", "service", "workers", "migrations"):
        for path in (ROOT / package).rglob("*.py"):
            for name in runtime_imports(ast.parse(path.read_text())):
                if name in sys.stdlib_module_names or name in first_party:
                    continue
                dists = {canonicalize_name(d) for d in distributions.get(name, [name])}
                if not dists & declared:
                    missing[name] = str(path.relative_to(ROOT))
    assert not missing, f"imported but not runtime dependencies: {missing}"


def runtime_imports(tree: ast.Module) -> set[str]:
    """Top-level names of the modules imported, except under ``if TYPE_CHECKING:``."""
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names
