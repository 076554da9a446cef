"""The unlearning service: HTTP API, lineage database and serving."""
