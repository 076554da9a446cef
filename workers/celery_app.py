"""The Celery application, configured from the service settings (built on demand)."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange
from kombu import Queue as KombuQueue

from service.queues import Queue
from service.settings import Settings

# A retrain of the longest suffix must finish before the broker re-delivers its message.
LONGEST_TASK_S = 6 * 3600


def create_celery(settings: Settings) -> Celery:
    app = Celery("unlearn", broker=settings.broker_url)
    app.conf.update(
        task_queues=[KombuQueue(q.value, Exchange(q.value), routing_key=q.value) for q in Queue],
        task_default_queue=Queue.training.value,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        task_soft_time_limit=LONGEST_TASK_S,
        task_time_limit=LONGEST_TASK_S + 300,
        worker_hijack_root_logger=False,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Kombu's SQLAlchemy transport hands its options to create_engine: Redis only.
        app.conf.broker_transport_options = {
            "visibility_timeout": LONGEST_TASK_S + 3600,
            "queue_order_strategy": "priority",
        }
    app.conf.imports = ["workers.tasks.health", "workers.tasks.training", "workers.tasks.deletions"]
    return app
