from django.urls import path

from . import plan_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("order/", views.order, name="vps-order"),
    path("vps/<int:veid>/", views.detail, name="vps-detail"),
    path("vps/<int:veid>/live/", views.operations_fragment, name="vps-live"),
    path("vps/<int:veid>/password/", views.reset_password, name="vps-password"),
    path("vps/<int:veid>/reinstall/", views.reinstall, name="vps-reinstall"),
    path("vps/<int:veid>/plan/", plan_views.change_plan, name="vps-plan"),
    path("vps/<int:veid>/snapshots/<slug:what>/", views.snapshot_action,
         name="vps-snapshot"),
    path("vps/<int:veid>/<slug:name>/", views.action, name="vps-action"),
]
