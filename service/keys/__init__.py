"""API keys of a tenant: list, issue, rotate and revoke (admin keys only)."""
