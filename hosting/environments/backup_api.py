"""API of a VPS's backups: the list, browsing one, downloading a file of it, and
restoring it into a new VPS (taking one and restoring in place or some files are
lifecycle actions: lifecycle.py). Works on a terminated VPS while its backups are
kept."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from hosting.core import idempotency
from hosting.core.api import IDEMPOTENCY_KEY
from rest_framework.exceptions import NotFound
from hosting.nodes.models import Node
from hosting.operations import services as operations
from hosting.operations.api import OperationSerializer
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from . import backup_browse, backups
from .models import BackupFetch

BACKUP_ID = r"[0-9a-f]{8,64}"


class BackupSerializer(serializers.Serializer):
    id = serializers.CharField(source="backup_id")
    created = serializers.DateTimeField()
    scheduled = serializers.BooleanField(help_text="taken in the node's backup window (else "
                                                   "on demand)")
    added_bytes = serializers.IntegerField(help_text="new data it stored")
    total_bytes = serializers.IntegerField(help_text="size of the files it holds")


class BackupsSerializer(serializers.Serializer):
    backups = BackupSerializer(many=True)
    keep_daily = serializers.IntegerField(help_text="its plan keeps this many daily backups "
                                                    "(0: the plan has no backups)")
    keep_weekly = serializers.IntegerField()
    stored_bytes = serializers.IntegerField(help_text="what they hold in the repository")
    kept_until = serializers.DateTimeField(allow_null=True, help_text="a terminated VPS's "
                                           "backups are deleted then")


class EntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(help_text='"file", "dir", "symlink", ...')
    size = serializers.IntegerField()
    mtime = serializers.CharField(allow_null=True)


class RestoreNewSerializer(serializers.Serializer):
    plan = serializers.SlugRelatedField(slug_field="name", queryset=Plan.objects.all())
    hostname = serializers.CharField(max_length=253)
    root_password = serializers.CharField(required=False, allow_blank=True, write_only=True,
                                          max_length=200, help_text="blank: as backed up")
    ssh_key = serializers.CharField(required=False, allow_blank=True, max_length=16000)
    node = serializers.SlugRelatedField(
        slug_field="name", queryset=Node.objects.all(), required=False,
        help_text="staff who may move VPSes only: the node it is to run on (default: the "
                  "node that keeps the backup if it has room, else the placement rule's)")


PATH = OpenApiParameter("path", str, default="/", description="a path inside the VPS")


class BackupsMixin:
    """The backup actions of the VPS viewset."""

    def _backup(self, backup_id):
        ve = self.get_object()
        found = backups.find(ve.backups, backup_id)
        if found is None:
            raise NotFound(f"VPS {ve.hostname} has no backup {backup_id}")
        return found

    @extend_schema(responses={200: BackupsSerializer})
    @action(detail=True, methods=["get"], url_path="backups")
    def backup_list(self, request, veid=None):
        """The VPS's backups, newest first, and its plan's retention. Its owner or staff."""
        ve = self.get_object()
        return Response(BackupsSerializer({
            "backups": ve.backups.all(), "keep_daily": ve.plan.backups_daily,
            "keep_weekly": ve.plan.backups_weekly, "stored_bytes": ve.backup_bytes,
            "kept_until": backups.terminated_until(ve)}).data)

    @extend_schema(parameters=[PATH], responses={200: EntrySerializer(many=True)})
    @action(detail=True, methods=["get"], url_path=rf"backups/(?P<backup_id>{BACKUP_ID})/files")
    def backup_files(self, request, veid=None, backup_id=None):
        """The entries of a directory of the backup (folders first). 409 if its node did
        not answer in time."""
        found = backup_browse.look(self._backup(backup_id), BackupFetch.What.LIST,
                                   request.query_params.get("path", "/"))
        return Response(EntrySerializer(found.entries, many=True).data)

    @extend_schema(parameters=[PATH], responses={(200, "application/octet-stream"):
                                                 OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"],
            url_path=rf"backups/(?P<backup_id>{BACKUP_ID})/download")
    def backup_download(self, request, veid=None, backup_id=None):
        """One file of the backup (up to 64 MiB; bigger ones: restore-files)."""
        return download(self._backup(backup_id), request.query_params.get("path", ""))

    @extend_schema(request=RestoreNewSerializer, responses={202: OperationSerializer},
                   parameters=[IDEMPOTENCY_KEY])
    @action(detail=True, methods=["post"],
            url_path=rf"backups/(?P<backup_id>{BACKUP_ID})/restore-new")
    def backup_restore_new(self, request, veid=None, backup_id=None):
        """A new VPS for the same customer with this backup's disk (another plan allowed;
        a terminated VPS's backups too, while kept). Answers 202 with its 'create'
        operation. Honours Idempotency-Key."""
        backup = self._backup(backup_id)
        asked = request.data.get("node") if hasattr(request.data, "get") else None
        if asked:  # refused before the name is looked up: no node names leak
            operations.check_actor(request.user, Operation.Kind.MIGRATE)
        body = RestoreNewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        op = idempotency.run(request, lambda key: backups.order_from(
            backup, request.user, data["plan"], data["hostname"],
            data.get("root_password", ""), data.get("ssh_key", ""), idempotency_key=key,
            node=data.get("node")))
        return Response(OperationSerializer(op, context={"request": request}).data,
                        status=202)


def download(backup, path):
    """The HTTP answer carrying file ``path`` of ``backup`` as an attachment."""
    found = backup_browse.look(backup, BackupFetch.What.FILE, path)
    name = found.path.rsplit("/", 1)[-1] or "file"
    answer = HttpResponse(bytes(found.content or b""), content_type="application/octet-stream")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    answer["Content-Disposition"] = f'attachment; filename="{safe}"'
    return answer
