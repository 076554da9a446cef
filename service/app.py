"""The FastAPI application factory. Engines and threads start in the lifespan, never at import.

The lifespan owns the process's parts: the database engine, the outbox relay (sends the jobs
that committed requests queued and, unless ``UNLEARN_API_HOUSEKEEPING`` is off, housekeeps while
this process leads: artifact collection among others), the serving registry (each base model
loaded on its first prediction), the webhook dispatcher (delivers committed events;
``UNLEARN_WEBHOOK_DELIVERY``) and, with Redis, the listener that preloads retrained layers and
drops collected ones. The relay and the dispatcher are woken by the commits that wrote their rows
(``service.db.after_commit``), never by the routes. At start, the default base model
(``UNLEARN_DEFAULT_BASE_MODEL``) is registered from ``UNLEARN_BACKBONE_PATH`` if the catalogue
lacks it, so that a model that names no base model always has one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service import housekeeping
from service.api import health
from service.api.limits import BodySizeLimit
from service.api.problems import install_problem_handlers, unstorable_value
from service.api.ratelimit import rate_limiter, verify_rate_limiter
from service.base_models.endpoints import router as base_models_router
from service.base_models.service import ensure_default_base_model
from service.dashboard import endpoints as dashboard
from service.db import after_commit
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.deletions.endpoints import class_router as class_deletions_router
from service.deletions.endpoints import router as deletions_router
from service.engine import EngineCatalogue
from service.errors import InvalidBaseModelError
from service.exactness.endpoints import router as exactness_router
from service.generation.endpoints import router as generation_router
from service.jobs.endpoints import router as jobs_router
from service.keys.endpoints import router as keys_router
from service.keys.endpoints import tenant_router
from service.models.endpoints import router as models_router
from service.observability.endpoints import router as metrics_router
from service.observability.metrics import app_registry
from service.observability.requests import RequestContext
from service.producer import create_producer
from service.readiness import artifacts_probe
from service.relay import OutboxRelay, celery_publisher
from service.serving.notify import ChangeListener
from service.serving.registry import ServingRegistry
from service.settings import Settings, get_settings
from service.webhooks.delivery import WebhookDispatcher
from service.webhooks.endpoints import deliveries_router as webhook_deliveries_router
from service.webhooks.endpoints import router as webhooks_router

API_VERSION = "0.2.0"
log = logging.getLogger(__name__)
SWITCH_INTERVAL_S = 0.0005


def _register_default_base_model(factory: sessionmaker[Session], settings: Settings) -> None:
    """Register the default base model when the catalogue lacks it. A folder that cannot be
    registered is logged, not fatal: models on other base models still serve, and a model that
    names none is a 422 naming the registered ones."""
    try:
        with unit_of_work(factory) as session:
            ensure_default_base_model(session, settings)
    except InvalidBaseModelError:
        log.exception("the default base model %r is not registered", settings.default_base_model)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Predictions run in worker threads beside the deletion path: few torch threads, and a
        # short GIL switch interval so a deletion's queries resume while a forward pass runs.
        torch.set_num_threads(settings.serving_threads)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        engine = make_engine(
            settings.database_url, sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s
        )
        factory = make_session_factory(engine)
        _register_default_base_model(factory, settings)
        celery = create_producer(settings)
        housekeeper = (
            housekeeping.Housekeeper(factory, settings) if settings.api_housekeeping else None
        )
        relay = OutboxRelay(
            factory,
            celery_publisher(celery),
            interval_s=settings.relay_interval_s,
            housekeeping=housekeeper,
            housekeeping_s=housekeeping.interval_s(settings),
        )
        serving = ServingRegistry(
            factory,
            cache(lambda: EngineCatalogue(settings)),
            max_generations=settings.lm_max_generations,
        )
        listener = (
            ChangeListener(settings.pubsub_url, serving.preload, serving.evict)
            if settings.pubsub_url
            else None
        )
        dispatcher = WebhookDispatcher(factory, settings) if settings.webhook_delivery else None
        after_commit.install(factory, relay=relay, dispatcher=dispatcher)
        app.state.engine = engine
        app.state.artifacts_probe = artifacts_probe(settings)
        app.state.session_factory = factory
        app.state.relay = relay
        app.state.serving = serving
        app.state.metrics = app_registry(factory)
        app.state.webhooks = dispatcher
        relay.start()
        if dispatcher is not None:
            dispatcher.start()
        if listener is not None:
            listener.start()
        try:
            yield
        finally:
            if listener is not None:
                listener.stop()
            if dispatcher is not None:
                dispatcher.stop()
            relay.stop()
            if housekeeper is not None:
                housekeeper.close()
            celery.close()
            engine.dispose()

    app = FastAPI(
        title="Unlearning service",
        version=API_VERSION,
        description="Exact machine unlearning: S3T training, lineage, deletion and serving.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.rate_limiter = rate_limiter(settings.write_rate_per_minute, settings.rate_limit_url)
    app.state.verify_rate_limiter = verify_rate_limiter(
        settings.verify_rate_per_minute, settings.rate_limit_url
    )
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)  # outside the body limit: a 413 has its request id too
    if settings.cors_origins:  # off by default: no browser origin may call the API
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    # Outermost: the client's address and scheme (https behind a TLS proxy) from the forwarded
    # headers of the configured proxies only; `unlearn serve` turns uvicorn's own reading off.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    # The database refused a value the schema let through (NUL in text, a number out of range).
    app.add_exception_handler(DataError, unstorable_value)
    for router in (
        health.router,
        metrics_router,
        base_models_router,
        models_router,
        generation_router,
        deletions_router,
        class_deletions_router,
        exactness_router,
        jobs_router,
        keys_router,
        tenant_router,
        webhooks_router,
        webhook_deliveries_router,
    ):
        app.include_router(router)
    dashboard.install(app)
    return app
