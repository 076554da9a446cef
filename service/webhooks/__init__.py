"""Signed webhooks: a tenant's endpoints, events written in the transaction of the change they
report (``events.emit``), and their delivery after commit (``delivery.WebhookDispatcher``)."""
