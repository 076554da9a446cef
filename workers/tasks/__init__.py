"""Celery tasks, one module per domain. Tasks are thin: load ids, call a function, record."""
