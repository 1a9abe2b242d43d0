from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        # Imported once the app registry is ready, as Django requires of ready().
        from audit.dbroles import grant_application_role

        post_migrate.connect(grant_application_role, sender=self)
