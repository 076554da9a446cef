"""The dashboard's per-minute prediction figures are kept per tenant: a tenant's admin sees
its own tenant's calls only."""

from __future__ import annotations

import uuid

from service.observability.metrics import RecentCalls


def test_each_tenant_sees_its_own_calls_only() -> None:
    calls = RecentCalls()
    mine, theirs, idle = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for seconds in (0.1, 0.3):
        calls.observe(mine, seconds, now=600.0)
    calls.observe(theirs, 2.0, now=600.0)
    calls.observe(theirs, 1.0, now=660.0)
    [bucket] = calls.snapshot(mine)
    assert (bucket.minute, bucket.count, bucket.worst) == (10, 2, 0.3)
    assert [(b.minute, b.count) for b in calls.snapshot(theirs)] == [(10, 1), (11, 1)]
    assert calls.snapshot(idle) == []


def test_an_hour_is_kept() -> None:
    calls, tenant = RecentCalls(minutes=60), uuid.uuid4()
    for minute in range(90):
        calls.observe(tenant, 0.01, now=minute * 60.0)
    assert [b.minute for b in calls.snapshot(tenant)] == list(range(30, 90))
