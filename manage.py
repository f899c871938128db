#!/usr/bin/env python
"""Django's command-line utility for the example project."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line
    from django.db import OperationalError, connection

    try:
        execute_from_command_line(sys.argv)
    except OperationalError as exc:
        from example_project.missing_database import explain

        line = explain(exc, connection.settings_dict)
        if line is None:
            raise
        # A missing database is a setup step, not a bug: say which step, without a traceback.
        sys.stderr.write(line + "\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
