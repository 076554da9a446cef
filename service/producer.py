"""The Celery app that sends messages: what the API, the housekeeper and the CLI need to publish
the outbox (broker, queues, serializer, transport options), and nothing of a worker.

A worker builds on it (``workers.celery_app.create_celery``) and adds only what consuming
needs: its signals, its task modules, acknowledgement, prefetch and time limits. So a process
that only sends imports no worker code (presence, devices, torch), and both sides agree on the
queues and the wire format because one function configures them.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange
from kombu import Queue as KombuQueue

from service.queues import Queue
from service.settings import Settings

#: The longest a task may run: a retrain of the longest suffix must finish before the broker
#: re-delivers its message (Redis's visibility timeout, below; the worker's time limits).
LONGEST_TASK_S = 6 * 3600


def create_producer(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url`` that publishes to the service's queues in JSON."""
    app = Celery("unlearn", broker=settings.broker_url)
    app.conf.update(
        task_queues=[KombuQueue(q.value, Exchange(q.value), routing_key=q.value) for q in Queue],
        task_default_queue=Queue.training.value,
        task_serializer="json",
        accept_content=["json"],
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Kombu's SQLAlchemy transport hands its options to create_engine: Redis only.
        app.conf.broker_transport_options = {
            "visibility_timeout": LONGEST_TASK_S + 3600,
            "queue_order_strategy": "priority",
        }
    return app
