"""Artifacts in the store: collecting those nothing live names any more."""
