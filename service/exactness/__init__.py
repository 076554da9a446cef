"""Exactness audits: retrain shards from scratch into a scratch store and compare the digests
with the layers served and the bytes stored (a check an auditor runs, not a claim to trust)."""
