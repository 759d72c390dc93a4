from django.urls import path

from . import backup_views, plan_views, views

BACKUP = "vps/<int:veid>/backups/<str:backup_id>/"

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
    path("vps/<int:veid>/backups/take/", backup_views.back_up, name="vps-backup"),
    path("vps/<int:veid>/backups/restore/", backup_views.restore, name="vps-backup-restore"),
    path(BACKUP, backup_views.browse, name="vps-backup-browse"),
    path(BACKUP + "download/", backup_views.fetch_file, name="vps-backup-download"),
    path(BACKUP + "restore-files/", backup_views.restore_files, name="vps-backup-files"),
    path(BACKUP + "new/", backup_views.restore_new, name="vps-backup-new"),
    path("vps/<int:veid>/<slug:name>/", views.action, name="vps-action"),
]
