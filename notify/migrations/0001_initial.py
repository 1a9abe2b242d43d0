"""WebhookDelivery moves here from kms; its table stays where it is."""

import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("kms", "0003_webhookdelivery"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="WebhookDelivery",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=uuid.uuid4,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("event", models.CharField(max_length=64)),
                        ("url", models.CharField(max_length=2048)),
                        ("payload", models.JSONField()),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending"),
                                    ("delivered", "Delivered"),
                                    ("failed", "Failed"),
                                ],
                                default="pending",
                                max_length=16,
                            ),
                        ),
                        ("attempts", models.PositiveIntegerField(default=0)),
                        (
                            "last_status_code",
                            models.PositiveSmallIntegerField(blank=True, null=True),
                        ),
                        ("last_error", models.CharField(blank=True, max_length=200)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_attempt_at", models.DateTimeField(blank=True, null=True)),
                        ("delivered_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "kms_webhookdelivery",
                        "indexes": [
                            models.Index(
                                fields=["status", "created_at"], name="kms_webhook_pending"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
