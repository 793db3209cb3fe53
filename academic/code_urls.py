from django.urls import path

from academic import code_views

urlpatterns = [
    path("", code_views.home, name="academic-code-home"),
    path("<int:pk>/", code_views.analysis, name="academic-code-analysis"),
    path("<int:pk>/status/", code_views.status, name="academic-code-status"),
    path("<int:pk>/source/<path:path>", code_views.source, name="academic-code-source"),
    path("<int:pk>/cancel/", code_views.cancel, name="academic-code-cancel"),
    path("<int:pk>/ask/", code_views.ask, name="academic-code-ask"),
]
