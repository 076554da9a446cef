"""The demo `make run` starts: a tenant, an admin key and an AG News model, trained on workers.

Idempotent: the first run creates everything, and the key and the model id are written to
``<data_dir>/demo.json`` (the key cannot be shown again: only its hash is stored); later runs
find the tenant and leave it as it is. The samples are a 400-row AG News subset shipped in
``examples/``.
"""

from __future__ import annotations

import csv
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from service.base_models.service import ensure_default_base_model
from service.db.models import Role
from service.db.repositories import ApiKeyRepository, TenantRepository
from service.engine import default_compute_profile
from service.errors import TenantNotFoundError
from service.models.schemas import ModelCreate, SampleIn
from service.models.service import create_model, register_samples
from service.settings import Settings
from service.training.scheduling import start_training

DEMO_TENANT = "demo"
DEMO_DATA = Path(__file__).resolve().parents[1] / "examples" / "agnews-demo.tsv"
DEMO_MODEL = ModelCreate(
    name="ag-news-demo",
    labels=["Business", "Sci/Tech", "Sports", "World"],
    n_shards=2,
    n_slices=2,
    budget=2,
    epochs_per_stage=1,
    learning_rate=2e-3,
    batch_size=16,
    max_length=32,
)


@dataclass(frozen=True)
class Demo:
    api_key: str
    model_id: str
    tenant: str = DEMO_TENANT


#: One in this many rows of the demo data (by a hash of its id: every subject keeps training
#: rows) goes to the model's evaluation split.
EVAL_EVERY = 8


def read_rows(path: Path = DEMO_DATA) -> list[SampleIn]:
    """The demo's rows; about one in :data:`EVAL_EVERY` is held out as its evaluation split
    (what the dashboard's measured quality is measured on)."""
    with path.open(encoding="utf-8", newline="") as f:
        return [
            SampleIn(
                external_id=row["external_id"],
                subject_id=row["subject_id"],
                label=row["label"],
                text=row["text"],
                split="eval"
                if zlib.crc32(row["external_id"].encode()) % EVAL_EVERY == 0
                else "train",
            )
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]


def seed_demo(session: Session, settings: Settings) -> Demo | None:
    """Create the demo (on the default base model, registered here if the catalogue lacks it)
    and queue its training; None when it exists already."""
    tenants = TenantRepository.from_session(session)
    try:
        tenants.by_name(DEMO_TENANT)
        return None
    except TenantNotFoundError:
        pass
    tenant = tenants.create(DEMO_TENANT)
    issued = ApiKeyRepository.from_session(session).issue(tenant.id, "demo", Role.admin)
    base = ensure_default_base_model(session, settings)
    model = create_model(
        session,
        tenant.id,
        DEMO_MODEL,
        default_base_model=base.name,
        default_profile=default_compute_profile(settings),
    )
    result = register_samples(session, tenant.id, model.id, read_rows())
    if result.errors:
        raise ValueError(f"demo data has bad rows: {result.errors[:3]}")
    start_training(session, model, actor="demo")
    return Demo(api_key=issued.token, model_id=str(model.id))


def save(demo: Demo, file: Path) -> None:
    """Write the demo's key and model id (after the transaction that created them committed)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(asdict(demo), indent=2) + "\n")
    file.chmod(0o600)
