from django.urls import path

from tests.apps.django_project import views

urlpatterns = [
    path("json/", views.json_view),
    path("items/<int:item_id>/", views.item_view),
    path("form/", views.form_view),
    path("async/", views.async_view),
]
