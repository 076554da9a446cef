"""Models and their training samples: schemas, service and endpoints."""
