"""`celery -A workers.app worker -Q deletions,training`: the worker entrypoint module.

Reads the settings when imported, as an entrypoint may; library code builds its own app.
"""

from service.settings import get_settings
from workers.celery_app import create_celery

app = create_celery(get_settings())
