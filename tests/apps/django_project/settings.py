"""Settings of the test project: no database, no installed apps, no templates."""

SECRET_KEY = "test-only-not-a-secret"  # a test project, never deployed
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.apps.django_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]  # APPEND_SLASH redirects
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
