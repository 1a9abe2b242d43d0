"""LocalSecret and WebhookDelivery now belong to the stores and notify apps; their tables
stay, so this changes only Django's model state."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("kms", "0003_webhookdelivery"),
        ("stores", "0001_initial"),
        ("notify", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="LocalSecret"),
                migrations.DeleteModel(name="WebhookDelivery"),
            ],
            database_operations=[],
        ),
    ]
