"""The dependency lock: compile it (`make lock`) and check it (`make lock-check`, in `make test`).

Three files, each pinned with hashes and installed with ``pip install --require-hashes``:

- ``torch-cpu.txt``: the CPU build of torch (its wheel lies on this machine's disk; a GPU
  image installs its own CUDA build instead and skips this file);
- ``run.txt``: everything else the service needs (``make run``, the images);
- ``dev.txt``: ``run.txt`` plus the dev tools and the client (``make test``, CI), at the same
  versions as ``run.txt``.

Why pip-tools: it resolves with pip itself, so it honours the machine's pip configuration
(the local CPU torch wheel, which uv and poetry do not look at: they would fetch a CUDA build
of several GB), and its output is a plain requirements file that pip, the Dockerfiles and the
GPU image install with ``--require-hashes`` and nothing else.

Each file's header records the SHA-256 of what it was compiled from (the dependency lists of
``pyproject.toml`` and ``client/pyproject.toml``, and ``constraints/cpu.txt``). ``check`` fails
when they changed since, when an entry is not an exact pin with a hash, or when a locked
version does not satisfy a requirement.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = ROOT / "requirements"
CONSTRAINTS = ROOT / "constraints" / "cpu.txt"
# torch goes to its own file: CPU installs take the pinned local build, GPU images their own.
SPLIT_OUT = "torch"
INPUTS_PREFIX = "# inputs-sha256: "
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass(frozen=True)
class Lock:
    """One lock file: its name, what it is compiled from, and the pins it must hold."""

    name: str
    sources: tuple[str, ...]
    extras: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return LOCK_DIR / self.name


RUN = Lock("run.txt", ("pyproject.toml",))
DEV = Lock("dev.txt", ("pyproject.toml", "client/pyproject.toml"), ("dev",))
TORCH = LOCK_DIR / "torch-cpu.txt"


def _project(source: str) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / source).read_text())["project"]
    return project


def requirements(lock: Lock) -> list[Requirement]:
    """The direct requirements a lock must satisfy (the local packages themselves left out)."""
    found: list[Requirement] = []
    for source in lock.sources:
        project = _project(source)
        found += [Requirement(r) for r in project.get("dependencies", [])]  # type: ignore[attr-defined]
        optional: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
        for extra in lock.extras:
            found += [Requirement(r) for r in optional.get(extra, [])]
    return found


def inputs_digest(lock: Lock) -> str:
    """The SHA-256 of what ``lock`` is compiled from: requirements, extras and constraints."""
    inputs = {
        "requirements": sorted(str(r) for r in requirements(lock)),
        "constraints": CONSTRAINTS.read_text(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def entries(text: str) -> list[list[str]]:
    """The entries of a compiled requirements file: each its lines (the pin, hashes, via)."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            blocks.append([line])
        elif blocks and line.startswith("    "):
            blocks[-1].append(line)
    return blocks


def pins(text: str) -> tuple[dict[str, str], list[str]]:
    """Package name -> pinned version, and a sentence for each entry that is not an exact pin
    with a hash (left out of the pins)."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for block in entries(text):
        entry = block[0].rstrip(" \\")
        match = _ENTRY.match(entry)
        if match is None:
            problems.append(f"`{entry}` is not an exact pin (name==version)")
        elif not any("--hash=sha256:" in line for line in block):
            problems.append(f"`{entry}` has no --hash")
        else:
            found[canonicalize_name(match[1])] = match[2]
    return found, problems


def _compile(lock: Lock, constraints: list[Path], upgrade: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / lock.name
        if lock.path.exists() and not upgrade:
            output.write_text(lock.path.read_text() + (TORCH.read_text() if TORCH.exists() else ""))
        command = [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--quiet",
            "--generate-hashes",
            "--allow-unsafe",
            "--strip-extras",
            "--no-emit-find-links",
            "--no-emit-index-url",
            "--no-header",
            "--output-file",
            str(output),
            *(f"--extra={extra}" for extra in lock.extras),
            *(f"--constraint={path}" for path in constraints),
            *(["--upgrade"] if upgrade else []),
            *lock.sources,
        ]
        subprocess.run(command, cwd=ROOT, check=True)  # noqa: S603 - pip-compile, our arguments
        return output.read_text()


def _header(lock_name: str, digest: str) -> str:
    return (
        f"# {lock_name}: generated by `make lock` (requirements/lock.py); do not edit by hand.\n"
        f"{INPUTS_PREFIX}{digest}\n"
    )


def compile_locks(upgrade: bool) -> None:
    """Compile run.txt, then dev.txt constrained to run.txt's versions; split torch out."""
    torch_block: list[str] | None = None
    run_with_torch = Path(tempfile.mkstemp(suffix=".txt")[1])
    try:
        for lock in (RUN, DEV):
            constraints = [CONSTRAINTS] + ([run_with_torch] if lock is DEV else [])
            # dev.txt's "via" names run.txt, not the temporary copy (no churn between runs)
            text = _compile(lock, constraints, upgrade).replace(
                str(run_with_torch), "requirements/run.txt"
            )
            if lock is RUN:
                run_with_torch.write_text(text)
            kept = []
            for block in entries(text):
                if canonicalize_name(block[0].split("==")[0]) == SPLIT_OUT:
                    torch_block = [line for line in block if "--hash" in line or "==" in line]
                else:
                    kept.append("\n".join(block))
            _write(lock.path, _header(lock.name, inputs_digest(lock)) + "\n".join(kept) + "\n")
    finally:
        run_with_torch.unlink()
    if torch_block is None:
        raise SystemExit("torch is not in the resolution: the project must depend on it")
    torch_block[-1] = torch_block[-1].rstrip(" \\")
    _write(
        TORCH,
        "# torch-cpu.txt: the CPU build, for CPU installs (GPU images install their own).\n"
        + "\n".join(torch_block)
        + "\n",
    )


def _write(path: Path, text: str) -> None:
    """Write ``text`` unless the file holds it already (an unchanged lock keeps its mtime, so
    make does not reinstall)."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def check() -> list[str]:
    """What is wrong with the locks, as sentences; empty when they agree with the project."""
    problems: list[str] = []
    locked: dict[str, dict[str, str]] = {}
    for lock in (RUN, DEV):
        if not lock.path.exists():
            problems.append(f"{lock.name} is missing: run `make lock`")
            continue
        text = lock.path.read_text()
        recorded = next((ln for ln in text.splitlines() if ln.startswith(INPUTS_PREFIX)), "")
        if recorded.removeprefix(INPUTS_PREFIX) != inputs_digest(lock):
            problems.append(
                f"{lock.name} was compiled from other requirements than pyproject.toml's or "
                "constraints/cpu.txt's today: run `make lock`"
            )
        locked[lock.name], wrong = pins(text)
        problems += [f"{lock.name}: {problem}" for problem in wrong]
    torch_pins, wrong = pins(TORCH.read_text()) if TORCH.exists() else ({}, ["missing"])
    problems += [f"torch-cpu.txt: {problem}" for problem in wrong]
    for lock in (RUN, DEV):
        versions = {**locked.get(lock.name, {}), **torch_pins}
        for requirement in requirements(lock):
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            if name not in versions:
                problems.append(f"{lock.name} lacks `{requirement}`")
            elif not requirement.specifier.contains(versions[name], prereleases=True):
                problems.append(f"{lock.name} pins {name}=={versions[name]}: not `{requirement}`")
    run, dev = locked.get(RUN.name, {}), locked.get(DEV.name, {})
    problems += [
        f"dev.txt pins {name}=={dev.get(name)}, run.txt {version}: run `make lock`"
        for name, version in run.items()
        if dev.get(name) != version
    ]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["compile", "check"])
    parser.add_argument("--upgrade", action="store_true", help="take the newest releases")
    args = parser.parse_args()
    if args.command == "compile":
        compile_locks(args.upgrade)
        return
    problems = check()
    for problem in problems:
        print(f"lock: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(1)
    print("lock: requirements/*.txt agree with pyproject.toml")


if __name__ == "__main__":
    main()
