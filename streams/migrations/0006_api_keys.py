"""API keys for non-browser clients (hashed)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("streams", "0005_task_fallbacks_history"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("prefix", models.CharField(editable=False, max_length=16, unique=True)),
                ("key_hash", models.CharField(editable=False, max_length=200)),
                ("created", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("revoked", models.BooleanField(default=False, help_text="A revoked key is refused.")),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        help_text="Runs started with the key belong to this user (empty: to the key itself).",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_keys",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"ordering": ["-created"], "verbose_name": "API key"},
        ),
    ]
