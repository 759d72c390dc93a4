"""Top-level URL routes of the dashboard."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from hosting.core.signin import SignInView
from hosting.usage.metrics import MetricsView

urlpatterns = [
    path("login/", SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("hosting.api_urls")),
    path("metrics", MetricsView.as_view(), name="metrics"),
    # Browsers ask for /favicon.ico whatever the pages link; the icon is an SVG.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("staff/", include("hosting.core.staff_urls")),
    path("account/", include("hosting.core.account_urls")),
    path("", include("hosting.environments.urls")),
]

handler404 = "hosting.core.api.not_found"  # JSON under /api/
