"""A minimal Django project (no manage.py, no database) served over WSGI and over ASGI.

    python -m prefork -w 2 --interface wsgi examples.django_site.wsgi:application
    python -m prefork -w 2 --interface asgi examples.django_site.asgi:application

Then: curl http://127.0.0.1:8000/hello/world/

``wsgi.py`` and ``asgi.py`` are the files ``django-admin startproject``
writes; each sets ``DJANGO_SETTINGS_MODULE`` to ``examples.django_site.settings``
unless the environment already names other settings. Over WSGI, Django runs
on each worker's thread pool (``--threads``); over ASGI, on each worker's
event loop (sync views in Django's thread, async views on the loop). The
answer says which interface served it.
"""
