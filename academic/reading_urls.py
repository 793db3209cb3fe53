from django.urls import path

from academic import reading_views

urlpatterns = [
    path("", reading_views.home, name="academic-reading"),
    path("<int:pk>/", reading_views.paper, name="academic-paper"),
    path("<int:pk>/status/", reading_views.status, name="academic-paper-status"),
    path("<int:pk>/ask/", reading_views.ask, name="academic-paper-ask"),
    path("<int:pk>/cancel/", reading_views.cancel, name="academic-paper-cancel"),
]
