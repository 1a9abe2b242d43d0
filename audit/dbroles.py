"""Privileges of the application's database role, applied after every `migrate`.

Migrations run as the migration role, which owns every table. The application role named
by KEYWARD_DB_APP_ROLE gets ordinary read-write access everywhere except the audit table,
where it may only INSERT and SELECT the audit log's tables (events, chain links, tree nodes,
rejections): append-only is enforced by privilege first, and by the triggers of the audit
migrations second. Pending pointers stay deletable: the sequencer removes them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections

# Append-only for the application: it may only INSERT and SELECT these.
AUDIT_TABLES = ("audit_event", "audit_link", "audit_tree_node", "audit_rejection")


def grant_application_role(using: str = "default", **kwargs: Any) -> None:
    role = settings.DB_APP_ROLE
    connection = connections[using]
    if not role or connection.vendor != "postgresql":
        return
    quoted = connection.ops.quote_name(role)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone() is None:
            raise RuntimeError(f"KEYWARD_DB_APP_ROLE names a role that does not exist: {role}")
        for statement in (
            f"GRANT USAGE ON SCHEMA public TO {quoted}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
            *(
                f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {t} FROM {quoted}"
                for t in AUDIT_TABLES
            ),
            *(f"REVOKE ALL ON {t} FROM PUBLIC" for t in AUDIT_TABLES),
        ):
            cursor.execute(statement)
