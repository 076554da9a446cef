"""`unlearn`: the command line of the service (database, API server, worker, tenants, keys)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from service.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@contextmanager
def _transaction() -> Iterator[Session]:
    """One committed transaction on the configured database; domain errors become CLI errors."""
    from service.db.engine import make_engine, make_session_factory, unit_of_work
    from service.errors import DomainError

    engine = make_engine(get_settings().database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            yield session
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc
    finally:
        engine.dispose()


@click.group()
def main() -> None:
    """Exact machine-unlearning service."""
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid configuration (UNLEARN_* variables):\n{exc}") from exc
    from service.observability import logs

    assert settings.log_format is not None
    logs.configure(settings.log_level, settings.log_format.value)


@main.group()
def db() -> None:
    """The lineage database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the lineage database up to REVISION (default: head)."""
    from service.db import migrate

    migrate.upgrade(get_settings().database_url, revision)
    if revision == "head":
        _ensure_default_base_model()


def _ensure_default_base_model() -> None:
    """Register UNLEARN_DEFAULT_BASE_MODEL from UNLEARN_BACKBONE_PATH when the catalogue lacks
    it (the migration registered the default of its day; the settings may name another)."""
    from service.base_models.service import ensure_default_base_model

    with _transaction() as session:
        ensure_default_base_model(session, get_settings())


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the lineage database down to REVISION (`base` empties it)."""
    from service.db import migrate

    migrate.downgrade(get_settings().database_url, revision)


@main.command()
@click.option("--host", default=None, help="Bind address (default: UNLEARN_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: UNLEARN_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Start the HTTP API."""
    _serve(host, port)


def _serve(host: str | None, port: int | None) -> None:
    import uvicorn

    from service.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the service's handlers (logs.configure)
        access_log=False,  # service.access writes one record per request, with its id
        proxy_headers=False,  # the app reads them, from UNLEARN_TRUSTED_PROXIES only
    )


#: The workers `unlearn run` starts (queues, node name): approximate passes apart, so that a
#: pass never waits behind a running retrain.
RUN_WORKERS = (("deletions", "passes@%h"), ("training", "training@%h"))


@main.command()
@click.option("--host", default=None, help="Bind address (default: UNLEARN_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: UNLEARN_PORT).")
@click.option("--demo/--no-demo", default=True, show_default=True, help="Seed the demo model.")
def run(host: str | None, port: int | None, demo: bool) -> None:
    """Everything `make run` starts: migrate, seed the demo, two worker processes (approximate
    passes, training) and the API."""
    import subprocess

    from service.db import migrate

    settings = get_settings()
    migrate.upgrade(settings.database_url)
    _ensure_default_base_model()
    if demo:
        _seed_demo()
    workers = [
        subprocess.Popen(  # noqa: S603 (our own command line)
            [sys.executable, "-m", "service.cli", "worker", "--queues", queues, "--name", name],
            preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
        )
        for queues, name in RUN_WORKERS
    ]
    try:
        _serve(host, port)
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def _stop_with_parent() -> None:
    """In the worker child (Linux): SIGTERM when `unlearn run` dies, even by SIGKILL."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _seed_demo() -> None:
    from service import demo

    settings = get_settings()
    file = settings.data_dir / "demo.json"
    with _transaction() as session:
        created = demo.seed_demo(session, settings)
    if created is not None:
        demo.save(created, file)
        click.echo(f"demo: tenant `demo`, model {created.model_id} training on the worker")
    click.echo(f"demo: the admin key and the model id are in {file}")


#: The worker role's Celery app, named as ``celery -A`` names it: the CLI starts that role by
#: name and imports no worker code (``workers.app`` builds it from the settings: the producer's
#: app of ``service.producer`` plus the worker's signals and tasks).
WORKER_APP = "workers.app:app"


@main.command()
@click.option(
    "--queues",
    default="deletions,training",
    show_default=True,
    help="Kinds of queue to consume; the worker takes those of its own compute profile.",
)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Jobs run at once (with --pool prefork: processes, each starting CUDA after the fork).",
)
@click.option("--pool", default="solo", show_default=True, help="solo, or prefork for several.")
@click.option(
    "--name",
    default="celery@%h",
    show_default=True,
    help="The Celery node name; unique per worker (%h: the host name).",
)
def worker(queues: str, concurrency: int, pool: str, name: str) -> None:
    """Start a Celery worker process for this machine's compute profile (UNLEARN_DEVICE)."""
    from celery import Celery
    from celery.utils.imports import symbol_by_name

    from service.queues import Queue, queue_for
    from unlearning.device import DeviceError, local_profile

    settings = get_settings()
    try:
        kinds = [Queue(kind.strip()) for kind in queues.split(",") if kind.strip()]
        profile = local_profile(settings.device, settings.base_precision)
    except ValueError as exc:  # DeviceError too
        choices = ", ".join(q.value for q in Queue)
        detail = str(exc) if isinstance(exc, DeviceError) else f"queues are among {choices}"
        raise click.ClickException(detail) from exc
    consumed = ",".join(queue_for(kind, profile) for kind in kinds)
    click.echo(f"worker: compute profile {profile}, queues {consumed}")
    app: Celery = symbol_by_name(WORKER_APP)
    app.worker_main(
        [
            "worker",
            "-Q",
            consumed,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--hostname",
            name,
            "--loglevel",
            get_settings().log_level.upper(),
        ]
    )


@main.command()
def housekeeper() -> None:
    """Start a housekeeper: re-sends jobs silent past their lease, purges overdue payloads,
    collects dead artifacts and relays the outbox. Run one or more anywhere (one leads at a
    time); then API processes may leave it (UNLEARN_API_HOUSEKEEPING=false)."""
    import signal
    import threading

    from service.housekeeping import run_housekeeper

    stopped = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopped.set())
    click.echo("housekeeper: started")
    run_housekeeper(get_settings(), stopped)


@main.command()
def profile() -> None:
    """Print this machine's compute profile for UNLEARN_DEVICE (what its workers consume)."""
    from unlearning.device import DeviceError, local_profile

    try:
        settings = get_settings()
        click.echo(local_profile(settings.device, settings.base_precision))
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def tenants() -> None:
    """Tenants."""


@tenants.command("create")
@click.argument("name")
def tenants_create(name: str) -> None:
    """Create a tenant and print its id."""
    from service.db.repositories import TenantRepository

    with _transaction() as session:
        tenant = TenantRepository.from_session(session).create(name)
    click.echo(str(tenant.id))


@tenants.command("rotate-secret")
@click.argument("name")
def tenants_rotate_secret(name: str) -> None:
    """Make a new identifier secret current for the tenant (older versions are kept, so that
    earlier certificates stay verifiable) and print its version, never the secret."""
    from service.db.repositories import TenantRepository

    with _transaction() as session:
        tenants = TenantRepository.from_session(session)
        version = tenants.rotate_secret(tenants.by_name(name).id)
    click.echo(str(version))


@main.group("base-models")
def base_models() -> None:
    """The base-model catalogue: the pretrained folders models fine-tune (deployment-wide)."""


@base_models.command("register")
@click.argument("name")
@click.argument("uri")
def base_models_register(name: str, uri: str) -> None:
    """Register the Hugging Face folder (or s3://bucket/prefix) URI as NAME, read offline:
    its family, size and weights' digest (an unsupported architecture is refused here)."""
    from service.base_models.service import register

    with _transaction() as session:
        base = register(session, get_settings(), name, uri)
        line = f"{base.name}\t{base.family}\t{base.modality.value}\t{base.n_layers} layers\t"
        line += base.sha256
    click.echo(line)


@base_models.command("list")
def base_models_list() -> None:
    """Every base model: name, family, modality, layers, models using it, digest, location."""
    from service.db.repositories import BaseModelRepository

    with _transaction() as session:
        repository = BaseModelRepository.from_session(session)
        usage = repository.usage()
        lines = [
            f"{b.name}\t{b.family}\t{b.modality.value}\t{b.n_layers}\t"
            f"{usage.get(b.id, 0)} models\t{b.sha256}\t{b.uri}"
            for b in repository.list()
        ]
    for line in lines:
        click.echo(line)


@base_models.command("remove")
@click.argument("name")
def base_models_remove(name: str) -> None:
    """Remove base model NAME; refused while any model uses it."""
    from service.base_models.service import remove

    with _transaction() as session:
        remove(session, name)
    click.echo(f"removed {name}")


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--role", type=click.Choice(["app", "admin"]), default="app", show_default=True)
@click.option("--name", default="default", show_default=True, help="A label for the key.")
def keys_create(tenant_name: str, role: str, name: str) -> None:
    """Issue an API key and print it (shown once; only its hash is stored)."""
    from service.db.models import Role
    from service.db.repositories import ApiKeyRepository, TenantRepository

    with _transaction() as session:
        tenant = TenantRepository.from_session(session).by_name(tenant_name)
        issued = ApiKeyRepository.from_session(session).issue(tenant.id, name, Role(role))
    click.echo(issued.token)


@main.group()
def webhooks() -> None:
    """Webhook delivery."""


@webhooks.command("deliver")
def webhooks_deliver() -> None:
    """Deliver webhook events until SIGTERM (beside, or instead of, the API's dispatchers:
    several never send one delivery twice)."""
    import signal

    from service.db.engine import make_engine, make_session_factory
    from service.webhooks.delivery import WebhookDispatcher

    settings = get_settings()
    engine = make_engine(
        settings.database_url, sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s
    )
    dispatcher = WebhookDispatcher(make_session_factory(engine), settings)

    def _stop(_signum: int, _frame: object) -> None:
        dispatcher.stop(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo("webhooks: delivering until SIGTERM")
    try:
        dispatcher.run()
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.option("--model", "model_id", default=None, help="One model's chain (default: every chain).")
def audit_verify(model_id: str | None) -> None:
    """Re-hash audit chains in full and record the results (what the reads, status and dashboard
    show); exits 1 if a chain is broken."""
    import uuid

    from service.audit.service import verify_fully
    from service.db.repositories import AuditRepository
    from service.db.repositories.audit import audit_chain

    if model_id is not None:
        try:
            chains = [audit_chain(uuid.UUID(model_id))]
        except ValueError as exc:
            raise click.BadParameter("not a model id", param_hint="--model") from exc
    else:
        with _transaction() as session:
            chains = AuditRepository.from_session(session).chains()
    broken = 0
    for chain in chains:
        with _transaction() as session:  # one chain per transaction
            result = verify_fully(session, chain)
        if result.ok:
            click.echo(f"{chain}: ok through seq {result.verified_through_seq}")
        else:
            broken += 1
            click.echo(f"{chain}: BROKEN at seq {result.first_bad_seq}: {result.reason}")
    if broken:
        raise SystemExit(1)
