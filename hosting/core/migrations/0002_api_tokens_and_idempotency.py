"""API tokens stored hashed, and idempotency records.

The keys of DRF's authtoken table (kept in clear) are moved over as digests,
so clients keep working with the keys they have, and the clear copies are
removed: on PostgreSQL by TRUNCATE (a new file; no dead tuples left for
VACUUM), on SQLite by DELETE under secure_delete (the rows are zeroed).
"""

import hashlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


OLD_TABLE = "authtoken_token"


def hash_old_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("core", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id FROM {OLD_TABLE}")
        for key, user_id in cursor.fetchall():
            ApiToken.objects.create(user_id=user_id, name="migrated", prefix=key[:8],
                                    digest=hashlib.sha256(key.encode()).hexdigest())
        if connection.vendor == "postgresql":
            # TRUNCATE drops the table's files (DELETE would leave the clear keys in
            # dead tuples until VACUUM); it refuses while deferred foreign-key checks
            # of rows written in this transaction are pending, so run those first.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"TRUNCATE {OLD_TABLE}")
        else:
            cursor.execute("PRAGMA secure_delete=ON" if connection.vendor == "sqlite" else "SELECT 1")
            cursor.execute(f"DELETE FROM {OLD_TABLE}")


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(blank=True, max_length=100)),
                ('prefix', models.CharField(db_index=True, max_length=8)),
                ('digest', models.CharField(max_length=64, unique=True)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('last_used', models.DateTimeField(blank=True, null=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-created'],
            },
        ),
        migrations.CreateModel(
            name='IdempotencyRecord',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=100, unique=True)),
                ('fingerprint', models.CharField(max_length=64)),
                ('operation_id', models.UUIDField(blank=True, null=True)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('user', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.RunPython(hash_old_tokens, migrations.RunPython.noop),
    ]
