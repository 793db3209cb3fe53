from django.urls import path

from academic import convert_views

urlpatterns = [
    path("", convert_views.convert, name="academic-convert"),
    path("new/", convert_views.create, name="academic-convert-create"),
    path("<int:pk>/", convert_views.status, name="academic-convert-status"),
    path("<int:pk>/image/", convert_views.image, name="academic-convert-image"),
    path("<int:pk>/again/", convert_views.again, name="academic-convert-again"),
]
