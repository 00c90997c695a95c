"""The project's WSGI application, as ``django-admin startproject`` writes it.

    python -m prefork -w 2 --interface wsgi examples.django_site.wsgi:application

The package's docstring (``__init__.py``) says more.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_site.settings")

application = get_wsgi_application()
