"""LocalSecret moves here from kms; its table stays where it is."""

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
                    name="LocalSecret",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("path", models.CharField(max_length=255)),
                        ("version", models.PositiveIntegerField()),
                        ("master_key_id", models.PositiveIntegerField()),
                        ("wrapped_key", models.BinaryField()),
                        ("key_nonce", models.BinaryField()),
                        ("nonce", models.BinaryField()),
                        ("ciphertext", models.BinaryField(null=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("destroyed_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "kms_localsecret",
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("path", "version"), name="kms_local_secret_unique"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
