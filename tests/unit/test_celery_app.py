"""The worker app routes every task to a known queue and registers the tasks by name; the
producer every sender uses speaks the same queues and wire format, and nothing of a worker."""

from __future__ import annotations

from pathlib import Path

from service.producer import create_producer
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


def test_senders_and_workers_agree_on_the_queues_and_the_wire_format(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/15")
    producer, worker = create_producer(settings), create_celery(settings)
    shared = ["broker_url", "task_default_queue", "task_serializer", "accept_content"]
    assert {k: producer.conf[k] for k in shared} == {k: worker.conf[k] for k in shared}
    assert producer.conf.task_queues == worker.conf.task_queues
    assert producer.conf.broker_transport_options == worker.conf.broker_transport_options
    assert producer.conf.broker_transport_options["queue_order_strategy"] == "priority"
    # What only consuming needs stays in the worker: no task modules, acks or time limits.
    assert not producer.conf.imports and not producer.conf.task_acks_late
    assert producer.conf.task_time_limit is None
    assert not create_producer(Settings(data_dir=tmp_path)).conf.broker_transport_options
