from django.contrib import admin
from django.urls import include, path
from mozilla_django_oidc.views import OIDCLogoutView

from assistant import health, usage_views, views
from assistant.api.urls import page_patterns, v1_patterns

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("accounts/login/", views.SignInView.as_view(), name="login"),
    # Ends the session, and at the provider too when the user came from it.
    path("accounts/logout/", OIDCLogoutView.as_view(), name="logout"),
    path("oidc/authenticate/", views.OIDCStartView.as_view(), name="oidc-authenticate"),
    path("oidc/callback/", views.OIDCCallbackView.as_view(), name="oidc-callback"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("academic/", include("academic.urls")),
    path("convert/", include("academic.convert_urls")),
    path("code/", include("academic.code_urls")),
    path("usage/", usage_views.usage_home, name="usage-home"),
    path("usage/overview/", usage_views.usage_overview, name="usage-overview"),
    path("v1/", include(v1_patterns)),
    path("api/", include(page_patterns)),
    path("", include("chat.urls")),
]
