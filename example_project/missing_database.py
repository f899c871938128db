"""One line instead of a traceback when ``DATABASE_URL`` names a PostgreSQL database that does not exist."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

# libpq's words, e.g. 'FATAL:  database "shop" does not exist'.
_MISSING = re.compile(r'database "(?P<name>[^"]+)" does not exist')


def createdb_command(settings_dict: Mapping[str, Any], name: str) -> str:
    """The ``createdb`` command line that creates ``name`` where ``settings_dict`` connects."""
    argv = ["createdb"]
    for flag, key in (("-h", "HOST"), ("-p", "PORT"), ("-U", "USER")):
        if settings_dict.get(key):
            argv += [flag, str(settings_dict[key])]
    return shlex.join([*argv, name])


def explain(exc: BaseException, settings_dict: Mapping[str, Any]) -> str | None:
    """The one line to print for ``exc`` when it says the database does not exist, else ``None``."""
    found = _MISSING.search(str(exc))
    if found is None:
        return None
    name = found["name"]
    where = f" on {settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 5432}"
    return (
        f"The PostgreSQL database {name!r} named by DATABASE_URL does not exist{where}: create it with "
        f"`{createdb_command(settings_dict, name)}`, or point DATABASE_URL at an existing database "
        "(unset it for the embedded SQLite database)."
    )
