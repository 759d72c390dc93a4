"""Staff roles; every existing staff login becomes an administrator (what it could do)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def staff_become_administrators(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    StaffRole = apps.get_model("core", "StaffRole")
    StaffRole.objects.bulk_create(
        [StaffRole(user_id=pk, role="administrator")
         for pk in User.objects.filter(is_staff=True).values_list("pk", flat=True)])


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0002_api_tokens_and_idempotency"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="StaffRole",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("role", models.CharField(choices=[
                    ("administrator", "Administrator"), ("support", "Support"),
                    ("billing", "Billing"), ("auditor", "Auditor (read-only)")],
                    max_length=16)),
                ("user", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                              related_name="staff_role",
                                              to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.RunPython(staff_become_administrators, migrations.RunPython.noop),
    ]
