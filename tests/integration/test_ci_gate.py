"""Without Redis the integration tests are skipped, except under CI=true where the run fails."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from .support import REPO_ROOT

# The file run without Redis; the expected counts are what pytest collects in it.
TESTS = "tests/integration/test_parallel_workers.py"


@pytest.fixture(scope="module")
def integration_tests() -> int:
    """How many integration tests ``TESTS`` holds, as pytest itself collects them."""
    result = pytest_without_redis("", "--collect-only", "-q", "-m", "integration")
    assert result.returncode == pytest.ExitCode.OK, result.stdout + result.stderr
    count = sum(line.startswith(f"{TESTS}::") for line in result.stdout.splitlines())
    assert count > 0, result.stdout
    return count


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("ci", "options", "exit_code", "expected"),
    [
        ("true", [], pytest.ExitCode.USAGE_ERROR, "integration tests need Redis (CI=true: refusing to skip them)"),
        ("", [], pytest.ExitCode.OK, "{count} skipped"),
        # Deselected integration tests do not need Redis, even under CI.
        ("true", ["-m", "not integration"], pytest.ExitCode.NO_TESTS_COLLECTED, "{count} deselected"),
    ],
    ids=["ci-fails", "local-skips", "ci-deselected"],
)
def test_integration_tests_fail_under_ci_when_redis_is_unreachable(integration_tests, ci, options, exit_code, expected):
    result = pytest_without_redis(ci, *options)
    output = result.stdout + result.stderr
    assert result.returncode == exit_code, output
    # Not preceded by a digit or a letter: "3 skipped" is not found in "13 skipped".
    assert re.search(rf"(?<!\w){re.escape(expected.format(count=integration_tests))}", output), output


def pytest_without_redis(ci: str, *options: str) -> subprocess.CompletedProcess[str]:
    """pytest run on ``TESTS`` in a new process, with ``CI`` set to ``ci`` and no Redis to reach."""
    env = {**os.environ, "CI": ci, "REDIS_URL": f"redis://127.0.0.1:{unused_port()}/0", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options, TESTS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )


def unused_port() -> int:
    """A local TCP port nothing listens on (the OS just handed it out and it was closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
