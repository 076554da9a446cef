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
