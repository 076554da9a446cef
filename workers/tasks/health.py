"""A liveness task: proves a worker consumes from the broker."""

from __future__ import annotations

from celery import shared_task

from service.queues import TaskName


@shared_task(name=TaskName.ping.value)
def ping() -> str:
    return "pong"
