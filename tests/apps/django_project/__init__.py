"""A minimal Django project served over ASGI (``django.core.asgi.get_asgi_application``).

``DJANGO_SETTINGS_MODULE=tests.apps.django_project.settings python -m prefork
--interface asgi tests.apps.django_project.asgi:application``; see
tests/e2e/test_asgi_apps.py.
"""
