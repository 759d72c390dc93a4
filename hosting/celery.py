"""The Celery app: web processes send operations, node workers run them.

Queues: ``hosting`` (housekeeping, any unprivileged worker) and one
``node.<name>`` per node, consumed only by that node's root worker.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hosting.settings")

app = Celery("hosting")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
