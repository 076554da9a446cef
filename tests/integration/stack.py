"""A real stack for process tests: a fresh PostgreSQL database, the machine's Redis as broker, the
tiny backbone as a model folder, and ``unlearn worker`` child processes started on demand."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from service.db.engine import make_engine
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import TINY_BASE, save_tiny_backbone
from tests.integration.services import require_redis, stop, unlearn


class WorkerStack:
    def __init__(
        self, tmp_path: Path, *, job_lease_s: float = 900.0, restore_after_s: float | None = None
    ) -> None:
        """``restore_after_s``: the parked orders' delay in the API and, when given, in the
        workers too (by default they keep the setting's own, 600 s)."""
        self.broker = require_redis()
        redis.Redis.from_url(self.broker).flushdb()
        self.database = FreshDatabase("postgresql", tmp_path)
        self.settings = Settings(
            data_dir=tmp_path,
            database_url=self.database.url(),
            broker_url=self.broker,
            backbone_path=save_tiny_backbone(tmp_path / "tiny"),
            default_base_model=TINY_BASE,
            relay_interval_s=0.2,
            job_lease_s=job_lease_s,
            # Parked orders follow as soon as a retrain finishes, so that tests can compare the
            # whole model with a fresh training (the API process of the e2e test keeps 600 s).
            retrain_restore_after_s=restore_after_s or 0,
            retrain_window_s=0,
        )
        self.env = {
            "UNLEARN_DATA_DIR": str(tmp_path),
            "UNLEARN_DATABASE_URL": self.settings.database_url,
            "UNLEARN_BROKER_URL": self.broker,
            "UNLEARN_BACKBONE_PATH": str(self.settings.backbone_path),
            "UNLEARN_DEFAULT_BASE_MODEL": TINY_BASE,
            "UNLEARN_LOG_FORMAT": "json",
        }
        if restore_after_s is not None:
            self.env["UNLEARN_RETRAIN_RESTORE_AFTER_S"] = str(restore_after_s)
        self.workers: list[subprocess.Popen[str]] = []
        self.db = make_engine(self.settings.database_url)

    def worker(self, *options: str) -> subprocess.Popen[str]:
        process = unlearn(["worker", *options], self.env)
        self.workers.append(process)
        return process

    def stop(self, worker: subprocess.Popen[str]) -> None:
        self.workers.remove(worker)
        assert "Traceback" not in stop(worker)

    def close(self) -> str:
        """Stop every worker and drop the database; the workers' output."""
        output = "".join(stop(w) for w in self.workers)
        self.db.dispose()
        self.database.close()
        return output
