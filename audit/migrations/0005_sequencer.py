"""The sequencer: events carry a MAC and are integrated into their chain afterwards.

Chain positions move from `audit_event` to `audit_link`; every existing event gets its
link (the same seq, prev_hash and hash, so existing chains keep verifying) and its MAC.
`audit_link` and `audit_rejection` are append-only like `audit_event`.
"""

import hashlib
import hmac
import json
from datetime import UTC

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

# Frozen copies of audit.chain's rules, so that this migration never changes meaning.
MAC_FIELDS = (
    "id",
    "chain",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "tenant",
    "target",
    "outcome",
    "request_id",
    "source_ip",
    "details",
)

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""
TABLES = ("audit_link", "audit_rejection")


def _postgres_table_triggers(table):
    return f"""
CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_update_delete;
ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate;
"""


def _sqlite_table_triggers(table):
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
           BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
           BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END""",
    ]


def _sqlite_event_triggers():
    # Rebuilding the table on SQLite (to drop columns) drops its triggers: put them back.
    return [
        "DROP TRIGGER IF EXISTS audit_event_no_update",
        "DROP TRIGGER IF EXISTS audit_event_no_delete",
        """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
           BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: UPDATE refused'); END""",
        """CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
           BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: DELETE refused'); END""",
    ]


def _mac(key, event):
    content = {name: getattr(event, name) for name in MAC_FIELDS}
    content["v"] = 1
    content["id"] = str(content["id"])
    content["occurred_at"] = (
        content["occurred_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
    raw = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")
    return hmac.new(key, raw, hashlib.sha256).hexdigest()


def backfill(apps, schema_editor):
    """Each existing event gets its link and its MAC."""
    event_model = apps.get_model("audit", "AuditEvent")
    link_model = apps.get_model("audit", "AuditLink")
    key = hmac.new(settings.AUDIT_HMAC_KEY, b"keyward/audit-event-mac/v1", hashlib.sha256).digest()
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update_delete"
        )
    elif vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
    now = timezone.now()
    links = []
    for event in event_model.objects.order_by("chain", "seq").iterator(chunk_size=2000):
        event_model.objects.filter(pk=event.pk).update(mac=_mac(key, event))
        links.append(
            link_model(
                event_id=event.pk,
                chain=event.chain,
                seq=event.seq,
                prev_hash=event.prev_hash,
                hash=event.hash,
                integrated_at=now,
            )
        )
        if len(links) >= 2000:
            link_model.objects.bulk_create(links)
            links = []
    link_model.objects.bulk_create(links)
    if vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_update_delete"
        )


def sqlite_triggers():
    """Every append-only trigger of the audit tables on SQLite (also used by the tests
    to put them back after emptying the tables)."""
    return [*_sqlite_event_triggers(), *(s for t in TABLES for s in _sqlite_table_triggers(t))]


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            POSTGRES_UP + "".join(_postgres_table_triggers(t) for t in TABLES), params=None
        )
    elif vendor == "sqlite":
        for statement in sqlite_triggers():
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_checkpoint")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="mac",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.CreateModel(
            name="AuditLink",
            fields=[
                (
                    "event",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="link",
                        serialize=False,
                        to="audit.auditevent",
                    ),
                ),
                ("chain", models.CharField(max_length=80)),
                ("seq", models.BigIntegerField()),
                ("prev_hash", models.CharField(max_length=64)),
                ("hash", models.CharField(max_length=64)),
                ("integrated_at", models.DateTimeField()),
            ],
            options={
                "db_table": "audit_link",
                "ordering": ("chain", "seq"),
                "constraints": [
                    models.UniqueConstraint(
                        fields=("chain", "seq"), name="audit_link_chain_seq_unique"
                    ),
                    models.UniqueConstraint(
                        fields=("chain", "prev_hash"), name="audit_link_chain_prev_unique"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(seq__gte=1), name="audit_link_seq_positive"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="AuditPending",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_id", models.UUIDField(unique=True)),
            ],
            options={"db_table": "audit_pending", "ordering": ("id",)},
        ),
        migrations.CreateModel(
            name="AuditRejection",
            fields=[
                ("event_id", models.UUIDField(primary_key=True, serialize=False)),
                ("reason", models.CharField(max_length=200)),
                ("rejected_at", models.DateTimeField()),
            ],
            options={"db_table": "audit_rejection"},
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="auditevent", name="audit_event_chain_seq_unique"),
        migrations.RemoveConstraint(model_name="auditevent", name="audit_event_chain_prev_unique"),
        migrations.RemoveConstraint(model_name="auditevent", name="audit_event_seq_positive"),
        migrations.RemoveField(model_name="auditevent", name="seq"),
        migrations.RemoveField(model_name="auditevent", name="prev_hash"),
        migrations.RemoveField(model_name="auditevent", name="hash"),
        migrations.AlterModelOptions(
            name="auditevent", options={"ordering": ("occurred_at", "id")}
        ),
        migrations.RunPython(install_triggers, migrations.RunPython.noop),
    ]
