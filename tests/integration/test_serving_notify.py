"""Serving announcements on real Redis: a collection reaches every listener, which hands the
collected artifacts to its callback; generation changes still reach theirs."""

from __future__ import annotations

import uuid

import pytest

from service.serving.notify import ChangeListener, publish_change, publish_collected
from tests.integration.services import require_redis, wait_for

pytestmark = pytest.mark.integration


def test_collected_artifacts_and_changes_are_announced() -> None:
    url = require_redis()
    changed: list[uuid.UUID] = []
    collected: list[str] = []
    listener = ChangeListener(url, changed.append, collected.extend)
    listener.start()
    try:
        refs = [f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}" for _ in range(150)]
        model_id = uuid.uuid4()

        def announce() -> bool:  # until the listener has subscribed
            publish_collected(url, refs)
            publish_change(url, model_id, 7)
            return set(refs) <= set(collected) and model_id in changed

        wait_for(announce, 30, "the announcements")
    finally:
        listener.stop()


def test_a_service_on_another_redis_database_hears_nothing() -> None:
    """Pub/sub ignores database numbers: the channel carries the database's, so two services on
    one Redis server (or two test workers) never preload each other's models."""
    url = require_redis()
    base, _, db = url.rpartition("/")
    other = f"{base}/{(int(db or 0) + 1) % 16}"
    mine: list[uuid.UUID] = []
    theirs: list[uuid.UUID] = []
    listeners = [ChangeListener(url, mine.append), ChangeListener(other, theirs.append)]
    for listener in listeners:
        listener.start()
    try:
        model_id = uuid.uuid4()

        def announce() -> bool:  # until the listener has subscribed
            publish_change(url, model_id, 1)
            return model_id in mine

        wait_for(announce, 30, "the announcement")
        publish_change(url, model_id, 2)  # the other listener has had time to subscribe too
        wait_for(lambda: mine.count(model_id) >= 2, 30, "the second announcement")
        # (another test process may announce its own models on the other database)
        assert model_id not in theirs
    finally:
        for listener in listeners:
            listener.stop()
