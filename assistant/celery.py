import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "assistant.settings")

app = Celery("assistant")
# Settings named CELERY_* in Django's settings configure Celery.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
