"""A fresh project, as ``django-admin startproject`` makes it, plus only what README.md tells the user to add.

The additions are read from README.md itself (:func:`tests.readme_project.readme.settings_block`),
so what the README omits is missing here too. The one liberty taken: the SQLite file lives in
``README_PROJECT_DIR`` (a temporary directory) rather than next to the settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.readme_project.readme import settings_block

BASE_DIR = Path(os.environ.get("README_PROJECT_DIR", Path(__file__).resolve().parent))

SECRET_KEY = "django-insecure-readme-project"
DEBUG = True
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tests.readme_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# What the README adds: its INSTALLED_APPS entries (after "# ...", the defaults above), RQ_QUEUES, ...
_added: dict[str, Any] = {}
exec(settings_block(), _added)
_added.pop("__builtins__", None)
INSTALLED_APPS = [*INSTALLED_APPS, *_added.pop("INSTALLED_APPS")]
globals().update(_added)

# ... and the app the README puts its workflows.py in, written by the test from the README.
INSTALLED_APPS.append("accounts")
