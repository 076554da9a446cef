"""HTTP API: routes, schemas, dependencies and problem-details error handling."""
