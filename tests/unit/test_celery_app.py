"""The worker app routes every task to a known queue and registers the tasks by name."""

from __future__ import annotations

from pathlib import Path

from service.queues import Queue, TaskName
from service.settings import Settings
from workers.celery_app import create_celery


def test_every_task_name_is_registered_and_the_worker_is_safe_for_long_jobs(
    tmp_path: Path,
) -> None:
    app = create_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/15"))
    app.loader.import_default_modules()
    assert {name.value for name in TaskName} <= set(app.tasks)
    assert {q.name for q in app.conf.task_queues} == {q.value for q in Queue}
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit


def test_the_embedded_broker_gets_no_redis_transport_options(tmp_path: Path) -> None:
    """Kombu's SQLAlchemy transport passes its options to create_engine, which rejects them."""
    app = create_celery(Settings(data_dir=tmp_path))
    assert not app.conf.broker_transport_options
