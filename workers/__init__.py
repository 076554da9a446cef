"""Celery workers: thin tasks that call `unlearning/` and the service repositories."""
