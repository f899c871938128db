"""Rows the integration tests' steps write to count their own executions."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Effect(models.Model):
    """One execution of a step body of a test run (``token``), written by the step itself.

    Kept in the database rather than in Redis so that a test can flush Redis and still tell how
    many times each step body ran: at least once per recorded result, and when.
    """

    token = models.CharField(max_length=64)
    step = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["token", "step"], name="testapp_effect_token_step")]

    def __str__(self) -> str:
        return f"{self.step} of {self.token} in process {self.pid}"
