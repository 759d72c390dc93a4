"""Portal: backing up, browsing a backup, downloading from it, and the restores (whole,
some files, into a new VPS); the VPS page's card is ``backup_card``."""

import posixpath

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from hosting.core.errors import Forbidden, Invalid, ServiceError
from hosting.operations.models import Operation

from . import backup_browse, backups, services
from .backup_api import download
from .forms import RestoreBackupForm, RestoreFilesForm, RestoreNewForm
from .models import BackupFetch
from .refusals import refusal
from .views import SECRET_FIELDS, _own, detail

Kind = Operation.Kind


@login_required
@require_POST
def back_up(request, veid):
    ve = _own(request, veid)
    try:
        backups.take(ve, request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return detail(request, veid, status=exc.status)
    messages.success(request, "The backup has started: its progress shows above.")
    return redirect("vps-detail", veid=veid)


@sensitive_post_parameters(*SECRET_FIELDS)
@login_required
@require_POST
def restore(request, veid):
    ve = _own(request, veid)
    form = RestoreBackupForm(request.POST)
    try:
        if not form.is_valid():
            raise Forbidden("your current password is needed to restore a backup")
        services.reauthenticate(request.user, form.cleaned_data["current_password"],
                                form.cleaned_data["otp_code"])
        backups.restore(ve, request.user, _backup(ve, form.cleaned_data["backup"]))
    except ServiceError as exc:
        messages.error(request, exc.message)
        return detail(request, veid, status=exc.status)
    messages.success(request, f"{ve.hostname} is being restored from the backup.")
    return redirect("vps-detail", veid=veid)


@login_required
def browse(request, veid, backup_id):
    """One folder of a backup: its folders to open, its files to download or restore."""
    ve = _own(request, veid)
    backup = _backup(ve, backup_id)
    path = request.GET.get("path") or "/"
    context = {"ve": ve, "backup": backup, "path": path, "entries": [], "error": "",
               "restore_files_form": RestoreFilesForm(),
               "restore_files_refusal": refusal(ve, _current(ve), Kind.RESTORE_FILES)
               if ve.actual_state != "destroyed" else "the VPS was terminated"}
    try:
        path = backups.inside_path(path, "path")
        context["path"] = path
        found = backup_browse.look(backup, BackupFetch.What.LIST, path).entries
        context["entries"] = [{**e, "full": posixpath.join(path, e["name"]),
                               "changed": (e.get("mtime") or "")[:16].replace("T", " ")}
                              for e in found]
    except ServiceError as exc:
        context["error"] = exc.message
    context["crumbs"] = _crumbs(path)
    return render(request, "environments/backup_browse.html", context,
                  status=400 if context["error"] else 200)


@login_required
def fetch_file(request, veid, backup_id):
    ve = _own(request, veid)
    try:
        return download(_backup(ve, backup_id), request.GET.get("path", ""))
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("vps-backup-browse", veid=veid, backup_id=backup_id)


@login_required
@require_POST
def restore_files(request, veid, backup_id):
    ve = _own(request, veid)
    form = RestoreFilesForm(request.POST)
    try:
        if not form.is_valid():
            raise Invalid("say which file or folder to restore")
        data = form.cleaned_data
        backups.restore_files(ve, request.user, _backup(ve, backup_id), data["path"],
                              data["into"] or "/")
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("vps-backup-browse", veid=veid, backup_id=backup_id)
    messages.success(request, f"{form.cleaned_data['path']} is being restored.")
    return redirect("vps-detail", veid=veid)


@sensitive_post_parameters(*SECRET_FIELDS)
@login_required
def restore_new(request, veid, backup_id):
    """A new VPS with this backup's disk (another plan allowed)."""
    ve = _own(request, veid)
    backup = _backup(ve, backup_id)
    form = RestoreNewForm(request.POST or None, initial={"plan": ve.plan})
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            op = backups.order_from(backup, request.user, data["plan"], data["hostname"],
                                    data["root_password"])
        except ServiceError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            status = exc.status
        else:
            messages.success(request, f"{op.environment.hostname} is being made from the "
                                      "backup.")
            return redirect("vps-detail", veid=op.environment.veid)
    elif request.method == "POST":
        status = 400
    return render(request, "environments/backup_new.html",
                  {"ve": ve, "backup": backup, "form": form}, status=status)


def _backup(ve, backup_id):
    found = backups.find(ve.backups, backup_id)
    if found is None:
        raise Http404(f"VPS {ve.hostname} has no backup {backup_id}")
    return found


def _current(ve):
    return ve.operations.filter(state__in=Operation.UNFINISHED).first()


def _crumbs(path):
    """[(name, path)] from the root to ``path``, for the folder trail."""
    crumbs, here = [("/", "/")], ""
    for part in [p for p in path.split("/") if p]:
        here += "/" + part
        crumbs.append((part, here))
    return crumbs
