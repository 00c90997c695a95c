"""The project's ASGI application, as ``django-admin startproject`` writes it.

    python -m prefork -w 2 --interface asgi examples.django_site.asgi:application

The package's docstring (``__init__.py``) says more.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_site.settings")

application = get_asgi_application()
