"""Rerunning a failed run from a step in headless Chromium: the button, the form, the fork links.

Saves screenshots of the failed run's page (its "Rerun from here" buttons) and of the fork's page
(its "Forked from" link) to the temporary directory, and to ``DURABLE_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.admin.support import change_url, order, shoot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_failed_run_is_rerun_from_its_block_with_an_edited_context(
    embedded: EmbeddedQueue, page: Any, tmp_path: Path
) -> None:
    failed = order(embedded, "browser-fork", decline=True)
    page.goto(change_url(failed))
    steps = page.locator(".durable-fork-step")
    assert [text.split()[0] for text in steps.all_inner_texts()] == ["validate", "fulfil", "ship"]
    assert page.locator(".durable-rerun").all_inner_texts() == ["Rerun from here"] * 3
    shoot(page, tmp_path, "fork_run_page.png")

    page.locator('.durable-fork-step[data-step="fulfil"] .durable-rerun').click()
    page.wait_for_selector("textarea#id_context")
    shown = json.loads(page.locator("textarea#id_context").input_value())
    assert shown == {"token": "browser-fork", "amount": 250, "decline": True, "valid": True}

    page.fill("textarea#id_context", "{broken")
    page.click(".durable-fork-submit")
    assert page.locator(".field-context .errorlist").inner_text().startswith("Not JSON:")
    page.fill("textarea#id_context", json.dumps({**shown, "decline": False}))
    page.click(".durable-fork-submit")
    page.wait_for_selector(".field-forked_from_link")
    fork = WorkflowRun.objects.get(forked_from=failed)
    assert page.url.endswith(change_url(fork))
    assert page.locator(".messagelist .success").inner_text() == (
        f"Started run {fork.pk} from step fulfil of run {failed.pk}."
    )

    embedded.run_until_idle(timeout=30)
    page.reload()
    assert page.locator(".durable-run-summary .durable-badge-large").inner_text().strip() == "Completed"
    assert page.locator(".field-forked_from_link .readonly").inner_text() == f"{str(failed.pk)[:8]} at fulfil"
    shoot(page, tmp_path, "fork_fork_page.png")

    page.locator(".field-forked_from_link a").click()
    page.wait_for_url(f"**{change_url(failed)}")
    assert page.locator(".durable-fork").inner_text() == f"{str(fork.pk)[:8]} Completed from fulfil"
