"""The Celery application, configured from the service settings (built on demand)."""

from __future__ import annotations

import logging
from contextvars import Token
from typing import Any

from celery import Celery, signals

from service.observability import logs
from service.observability.health_server import HealthCheck, HealthServer
from service.producer import LONGEST_TASK_S, create_producer
from service.settings import Settings, get_settings
from unlearning.device import local_profile, make_deterministic
from workers.presence import Presence

log = logging.getLogger(__name__)


def create_celery(settings: Settings) -> Celery:
    """The producer's app (the same queues, wire format and transport options as every sender)
    plus what consuming needs: acknowledgement after the task, one message at a time, time
    limits, the task modules and the worker's signals."""
    app = create_producer(settings)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        task_soft_time_limit=LONGEST_TASK_S,
        task_time_limit=LONGEST_TASK_S + 300,
        worker_hijack_root_logger=False,
    )
    signals.worker_init.connect(_deterministic, weak=False)
    signals.worker_process_init.connect(_deterministic, weak=False)
    signals.worker_ready.connect(_announce, weak=False)
    signals.worker_shutdown.connect(_leave, weak=False)
    signals.setup_logging.connect(_keep_service_logging, weak=False)
    signals.task_prerun.connect(_enter_job, weak=False)
    signals.task_postrun.connect(_leave_job, weak=False)
    app.conf.imports = ["workers.tasks.health", "workers.tasks.training", "workers.tasks.deletions"]
    return app


def _deterministic(**_: Any) -> None:
    """Reproducible kernels, set in the worker (and each pool child) before CUDA starts."""
    make_deterministic()


_presence: list[Presence] = []
_health_servers: list[HealthServer] = []


def _announce(sender: Any, **_: Any) -> None:
    """Once the worker consumes: write its presence row and keep it fresh."""
    from workers import runtime

    settings = get_settings()
    queues = sorted(sender.app.amqp.queues.consume_from)
    presence = Presence(
        runtime.session_factory(),
        sender.hostname,
        local_profile(settings.device, settings.base_precision),
        queues,
        interval_s=settings.worker_heartbeat_s,
    )
    if settings.health_port:
        health = HealthServer(settings.host, settings.health_port, _health(presence))
        health.start()
        _health_servers.append(health)
    try:
        presence.start()
    except Exception:  # serving jobs matters more than being listed
        log.exception("worker %s could not announce itself", sender.hostname)
        return
    _presence.append(presence)


def _health(presence: Presence) -> HealthCheck:
    def check() -> tuple[bool, dict[str, Any]]:
        healthy, details = presence.health()
        return healthy, {**details, "jobs": sorted(_running_jobs.values())}

    return check


def _leave(**_: Any) -> None:
    while _presence:
        _presence.pop().stop()
    while _health_servers:
        _health_servers.pop().stop()


def _keep_service_logging(**_: Any) -> None:
    """A receiver here stops Celery from replacing the handlers `unlearn` configured."""


_job_tokens: dict[str, Token[str | None]] = {}
_running_jobs: dict[str, str] = {}  # task id -> job id, for the health answer


def _enter_job(task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], **_: Any) -> None:
    """Every record a job's task writes carries its ``job_id`` (the tasks' one argument)."""
    job = kwargs.get("job_id", args[0] if args else None)
    if isinstance(job, str):
        _running_jobs[task_id] = job
        _job_tokens[task_id] = logs.job_id.set(job)
        log.info("job task started", extra={"task_id": task_id})


def _leave_job(task_id: str, state: str | None = None, **_: Any) -> None:
    _running_jobs.pop(task_id, None)
    token = _job_tokens.pop(task_id, None)
    if token is not None:
        log.info("job task ended", extra={"task_id": task_id, "state": state})
        logs.job_id.reset(token)
