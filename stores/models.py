"""What the `local` store keeps in the database: ciphertext only."""

from __future__ import annotations

from django.db import models


class LocalSecret(models.Model):
    """Ciphertext of one secret version under the `local` store (envelope encryption)."""

    path = models.CharField(max_length=255)
    version = models.PositiveIntegerField()
    master_key_id = models.PositiveIntegerField()
    wrapped_key = models.BinaryField()
    key_nonce = models.BinaryField()
    nonce = models.BinaryField()
    ciphertext = models.BinaryField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "kms_localsecret"  # the table predates the stores app
        constraints = [
            models.UniqueConstraint(fields=("path", "version"), name="kms_local_secret_unique")
        ]

    def __str__(self) -> str:
        return f"{self.path} v{self.version}"
