from django.urls import include, path

from academic import views

urlpatterns = [
    path("", views.home, name="academic-home"),
    path("<int:pk>/", views.job, name="academic-job"),
    path("<int:pk>/status/", views.job_status, name="academic-job-status"),
    path("<int:pk>/chunks/", views.job_chunks, name="academic-job-chunks"),
    path("<int:pk>/decide/", views.decide, name="academic-decide"),
    path("<int:pk>/cancel/", views.cancel, name="academic-cancel"),
    path("<int:pk>/download/", views.download, name="academic-download"),
    path("reading/", include("academic.reading_urls")),
]
