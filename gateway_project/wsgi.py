"""WSGI entry point: `gunicorn -c gunicorn.conf.py gateway_project.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
application = get_wsgi_application()

# Import the URLconf (and with it every view and adapter) now: with gunicorn's preload_app this runs
# once in the master, so workers share those pages instead of each importing them after the fork.
get_resolver().url_patterns  # noqa: B018
