"""The lineage database: ORM models, engine/session factories and repositories."""
