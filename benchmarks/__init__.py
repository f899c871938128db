"""Benchmarks of durable_django against Celery, RQ and DBOS: ``python -m benchmarks.runner``."""
