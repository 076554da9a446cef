"""Deletion requests: schemas, service (deactivate, schedule, report), lifecycle (retry, start,
complete or fail, purge the kept payloads) and endpoints."""
