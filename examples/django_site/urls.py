"""The views and their routes: a sync view with a path parameter and an async view."""

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path


def interface(request: HttpRequest) -> str:
    return "asgi" if hasattr(request, "scope") else "wsgi"


def hello(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse(
        {
            "message": f"hello, {name}",
            "framework": "django",
            "interface": interface(request),
            "pid": os.getpid(),
        }
    )


async def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ping": "pong", "interface": interface(request)})


urlpatterns = [
    path("hello/<str:name>/", hello),
    path("ping/", ping),
]
