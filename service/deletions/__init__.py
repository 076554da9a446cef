"""Deletion requests: schemas, service (deactivate, schedule, report) and endpoints."""
