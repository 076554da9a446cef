"""Deletion requests: schemas, service (record, deactivate and schedule a request; retry a
failed one), views (the API's reading of requests), certificate (certificates and inclusion
proofs) and endpoints. What jobs settle for a request afterwards is ``service.jobs.settlement``'s.
"""
