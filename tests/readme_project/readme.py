"""The code of README.md, read from the file itself, so that the README and its test cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_block(starting_with: str) -> str:
    """The README's one ```python block whose first line starts with ``starting_with``."""
    found = [block for block in _FENCE.findall(README.read_text()) if block.startswith(starting_with)]
    if len(found) != 1:
        raise LookupError(f"README.md has {len(found)} python blocks starting with {starting_with!r}, not 1")
    return found[0]


def settings_block() -> str:
    """What "Use it in your project" tells the user to add to their settings."""
    return python_block('INSTALLED_APPS = [\n    # ...\n    "django_rq"')


def workflows_module() -> str:
    """The example's ``accounts/workflows.py``."""
    return python_block("# accounts/workflows.py\n")


def session() -> str:
    """The example's interactive session (``>>>`` lines and their output)."""
    return python_block(">>> run = onboard_user.start(")
