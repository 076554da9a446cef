"""The ML core: S3T training, approximate unlearning and evaluation.

A library: it imports torch and friends, never web, database or Celery code.
"""
