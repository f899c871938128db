"""Without Redis the integration tests are skipped, except under CI=true where the run fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .support import REPO_ROOT


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("ci", "options", "exit_code", "expected"),
    [
        ("true", [], pytest.ExitCode.USAGE_ERROR, "integration tests need Redis (CI=true: refusing to skip them)"),
        ("", [], pytest.ExitCode.OK, "3 skipped"),
        # Deselected integration tests do not need Redis, even under CI.
        ("true", ["-m", "not integration"], pytest.ExitCode.NO_TESTS_COLLECTED, "3 deselected"),
    ],
    ids=["ci-fails", "local-skips", "ci-deselected"],
)
def test_integration_tests_fail_under_ci_when_redis_is_unreachable(ci, options, exit_code, expected):
    env = {**os.environ, "CI": ci, "REDIS_URL": f"redis://127.0.0.1:{unused_port()}/0", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *options,
            "tests/integration/test_parallel_workers.py",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    output = result.stdout + result.stderr
    assert result.returncode == exit_code, output
    assert expected in output


def unused_port() -> int:
    """A local TCP port nothing listens on (the OS just handed it out and it was closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
