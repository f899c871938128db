"""The table of ``DURABLE`` keys: documented, self-consistent, and read at access time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from durable_django.checks import check_settings
from durable_django.conf import DEFAULTS, TABLE, durable_settings

SETTINGS_DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def durable_section() -> str:
    text = SETTINGS_DOC.read_text()
    start = text.index("## `DURABLE`")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_key_has_a_row_in_the_docs_and_every_row_is_a_key() -> None:
    documented = re.findall(r"^\| `([A-Z_]+)` \|", durable_section(), flags=re.MULTILINE)
    assert set(documented) == set(TABLE)
    assert len(documented) == len(set(documented)), "a key has two rows"


def test_the_defaults_shown_in_the_docs_are_the_defaults() -> None:
    block = re.search(r"```python\n(.*?)```", durable_section(), flags=re.DOTALL)
    assert block is not None
    namespace: dict[str, Any] = {"__builtins__": {}}
    exec(block.group(1), namespace)  # the docs' own snippet, which has only literals and arithmetic
    assert namespace["DURABLE"] == DEFAULTS


@pytest.mark.parametrize("key", list(TABLE))
def test_a_default_passes_its_own_validation(key: str) -> None:
    setting = TABLE[key]
    assert setting.accepts(setting.default), f"default {setting.default!r} is not {setting.must_be}"


def test_every_default_spelled_out_passes_the_system_check() -> None:
    # Also imports the default API classes (E005), which accepts() alone does not.
    with override_settings(DURABLE=dict(DEFAULTS)):
        assert check_settings() == []


def test_a_setting_is_read_when_used_and_converted() -> None:
    with override_settings(DURABLE={}):
        assert (durable_settings.LEASE_SECONDS, durable_settings.API_AUTHENTICATION_CLASSES) == (5.0, None)
        with override_settings(DURABLE={"LEASE_SECONDS": 2, "API_AUTHENTICATION_CLASSES": ["a.B"]}):
            assert (durable_settings.LEASE_SECONDS, durable_settings.API_AUTHENTICATION_CLASSES) == (2.0, ("a.B",))


def test_a_setting_cannot_be_assigned_on_the_object() -> None:
    with pytest.raises(AttributeError, match=r"QUEUE is read from settings\.DURABLE"):
        durable_settings.QUEUE = "other"  # type: ignore[assignment]
