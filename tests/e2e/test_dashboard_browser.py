"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, watches a running
service (``unlearn serve`` and ``unlearn worker`` processes on PostgreSQL and Redis).

It logs in with an admin key, sees the model's layer grid all valid, triggers a deletion
through the API, and sees the affected cells turn to `retraining` and then, once the worker
retrained them, back to `valid`, with the deletion `completed`, all without a page reload.
Screenshots land in ``UNLEARN_E2E_ARTIFACTS`` (default ``var/test-artifacts/e2e``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from service.db.models import Role
from tests.conftest import require_service
from tests.integration.api import TINY_MODEL, auth, issue_keys, samples
from tests.integration.services import free_port, stop, unlearn, wait_for
from tests.integration.stack import WorkerStack

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.xdist_group("processes")]
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("UNLEARN_E2E_ARTIFACTS", ROOT / "var" / "test-artifacts" / "e2e"))
TIMEOUT_S = 180
#: What the probe found Chromium needs on this closed network, as root, headless.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Service:
    """The API as its own process beside the stack's worker processes."""

    def __init__(self, stack: WorkerStack) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **stack.env,
            "UNLEARN_PORT": str(self.port),
            "UNLEARN_RELAY_INTERVAL_S": "0.2",
            "UNLEARN_DASHBOARD_REFRESH_S": "0.5",
        }
        self.process = unlearn(["serve"], env)
        wait_for(self._up, 60, "the API to answer /healthz")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"unlearn serve exited:\n{stop(self.process)[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[WorkerStack, Service]]:
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"{CHROMIUM} is missing: `make system-deps` installs it")
    stack = WorkerStack(tmp_path)
    api = Service(stack)
    try:
        yield stack, api
    finally:
        output = stop(api.process) + stack.close()
        assert "Traceback" not in output, output[-4000:]


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_the_dashboard_follows_a_deletion_live(service: tuple[WorkerStack, Service]) -> None:
    stack, api = service
    token = issue_keys(stack.settings, Role.admin)["a"]
    http = httpx.Client(base_url=api.url, headers=auth(token), timeout=30)
    worker = stack.worker()
    model = _ok(http.post("/models", json=TINY_MODEL), 201)
    _ok(http.post(f"/models/{model['id']}/samples", json={"samples": samples(24)}))
    job_url = _ok(http.post(f"/models/{model['id']}/train"), 202)["job_url"]
    wait_for(lambda: _ok(http.get(job_url))["status"] == "succeeded", TIMEOUT_S, "the training")
    stack.stop(worker)  # the retrains wait in the queue, so the page shows them waiting

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{api.url}/dashboard/models/{model['id']}")
        assert "/dashboard/login" in page.url  # not logged in yet
        page.fill("#key", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/dashboard/models/{model['id']}")

        cells = page.locator(".cell")
        n_cells = 1
        for dimension in ("n_shards", "budget", "n_slices"):
            n_cells *= int(str(TINY_MODEL[dimension]))
        assert cells.count() == n_cells
        assert page.locator('.cell[data-state="valid"]').count() == n_cells
        page.evaluate("window.__sameDocument = true")
        shots.append(_shot(page, "1-trained"))

        deletion = _ok(
            http.post("/deletions", json={"model_id": model["id"], "sample_ids": ["s003"]}), 202
        )
        page.wait_for_selector('.cell[data-state="retraining"]')
        row = f'tr[data-deletion-id="{deletion["id"]}"]'
        page.wait_for_selector(f'{row}[data-status="deactivated"]')
        retraining = page.locator('.cell[data-state="retraining"]').count()
        assert 0 < retraining < n_cells
        shots.append(_shot(page, "2-deactivated"))

        worker = stack.worker()
        page.wait_for_selector(f'{row}[data-status="completed"]', timeout=TIMEOUT_S * 1000)
        # The served orders are back; the shard's other order waits, parked (S3T-aware
        # scheduling), and says why.
        page.wait_for_function(
            "document.querySelectorAll('.cell[data-state=\"valid\"]').length"
            " + document.querySelectorAll('.cell[data-state=\"parked\"]').length"
            f" === {n_cells}"
        )
        parked = page.locator('.cell[data-state="parked"]')
        assert parked.count() > 0 and "waits" in (parked.first.get_attribute("title") or "")
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        shots.append(_shot(page, "3-completed"))

        page.click(f"{row} a")
        page.wait_for_selector('[data-status="completed"]')
        assert "unlearning: exact" in page.content()
        shots.append(_shot(page, "4-certificate"))
        browser.close()
    for shot in shots:
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"
    print(f"screenshots: {', '.join(str(s) for s in shots)}")


def _shot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
