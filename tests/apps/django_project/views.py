"""The views: JSON from a sync view and from an async one, a POST form, a path parameter."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


@require_GET
def json_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "framework": "django",
            "pid": os.getpid(),
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META["SCRIPT_NAME"],
            "query": {key: request.GET.getlist(key) for key in sorted(request.GET)},
            "absolute": request.build_absolute_uri(),
        }
    )


def item_view(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"item_id": item_id, "q": request.GET.get("q")})


@csrf_exempt
@require_POST
def form_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "name": request.POST.get("name"),
            "tags": request.POST.getlist("tags"),
            "content_type": request.content_type,
        },
        status=201,
    )


async def async_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"async": True, "method": request.method})
