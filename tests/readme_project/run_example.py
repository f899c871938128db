"""Run README.md's example in a fresh project: ``python -m tests.readme_project.run_example DIR``.

``DIR`` gets an ``accounts`` app whose ``workflows.py`` is the README's, and the project's SQLite
database. The README's session is then replayed as a doctest, the runs executing on
``durable_django.testing.EmbeddedQueue`` where the README says "once the workers are done".
Prints the doctest's failures, if any, and exits non-zero on one.
"""

from __future__ import annotations

import contextlib
import doctest
import os
import sys
from pathlib import Path


def main(directory: Path) -> int:
    app = directory / "accounts"
    app.mkdir(parents=True, exist_ok=True)
    (app / "__init__.py").write_text("")
    from tests.readme_project.readme import session, workflows_module

    (app / "workflows.py").write_text(workflows_module())
    sys.path.insert(0, str(directory))
    os.environ["README_PROJECT_DIR"] = str(directory)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.readme_project.settings"

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("check", fail_level="WARNING")

    from accounts.workflows import onboard_user

    from durable_django.testing import EmbeddedQueue

    # Where the README's reader waits for the workers, the embedded queue executes the jobs.
    waiting = ">>> # ... once the workers are done:\n"
    text = session()
    if waiting not in text:
        print(f"README.md's session no longer has the line {waiting!r}")
        return 1
    text = text.replace(waiting, ">>> run_the_workers()\n")
    with EmbeddedQueue() as queue:

        def run_the_workers() -> None:
            # What the jobs print (the console email backend) goes to the real output, not the doctest's.
            with contextlib.redirect_stdout(sys.__stdout__):
                queue.run_until_idle()

        globs = {"onboard_user": onboard_user, "run_the_workers": run_the_workers}
        test = doctest.DocTestParser().get_doctest(text, globs, "README.md", "README.md", 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
    return 1 if runner.failures or not runner.tries else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
