"""README.md's example, copied into a fresh project with only the settings the README gives, works as shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.readme_project.readme import session, settings_block, workflows_module

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_holds_the_blocks_this_test_runs() -> None:
    assert 'EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"' in settings_block()
    assert "onboard_user = workflow(" in workflows_module()
    assert "run.status\n'completed'" in session()


def test_the_readme_example_completes_in_a_fresh_project_as_shown(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DURABLE_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "tests.readme_project.run_example", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The console backend printed the welcome email: nothing was sent over SMTP.
    assert "Subject: Welcome!" in done.stdout
    assert "To: ada@example.com" in done.stdout
