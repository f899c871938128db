"""Fixtures of the admin tests, and the ``browser`` marker of the tests that drive Chromium."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Debian's Chromium, which the browser tests drive through Playwright (no browser download).
CHROMIUM = Path(os.environ.get("DURABLE_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "browser-pw"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real headless Chromium through Playwright")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    if not (CHROMIUM.exists() or shutil.which(str(CHROMIUM))):
        return f"the browser tests need Chromium at {CHROMIUM}: run make chromium, or set DURABLE_CHROMIUM to its path"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the browser tests need the playwright package (pip install -e '.[dev]')"
    return None


# trylast: judge only the tests left after -m / -k deselection.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests are skipped without Chromium or Playwright, and fail the run under CI=true."""
    wanted = [item for item in items if item.get_closest_marker("browser")]
    reason = browser_missing() if wanted else None
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(reason + " (CI=true: refusing to skip them)")
    for item in wanted:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Users are created and logged in by almost every test here: hash their passwords cheaply."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# -- the browser tests' Chromium and a logged-in page --------------------------------------------


def _screenshots_module() -> Any:
    spec = importlib.util.spec_from_file_location("admin_screenshots", ROOT / "scripts" / "admin_screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module, launched as the screenshot script launches it."""
    from playwright.sync_api import sync_playwright

    screenshots = _screenshots_module()
    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the tests (and of
    # the fixtures' teardown) run between browser calls, never inside one.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=screenshots.CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser: Any, live_server: Any, django_user_model: Any) -> Iterator[Any]:
    """A page logged in to the admin through its login page."""
    django_user_model.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/admin/")
    assert page.url.endswith("/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    yield page
    context.close()
