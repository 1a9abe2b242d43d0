"""Each chain becomes a Merkle tree too: links gain their leaf hash, and the complete
subtrees at every fourth level are stored in `audit_tree_node` (append-only like the other
audit tables). Existing links get their leaf hash and existing chains their subtrees."""

import hashlib
import json
from datetime import UTC
from importlib import import_module

from django.db import migrations, models

SEQUENCER = import_module("audit.migrations.0005_sequencer")

# Frozen copies of audit.chain's and audit.tree's rules, so this migration never changes
# meaning.
HASHED_FIELDS = (*SEQUENCER.MAC_FIELDS, "seq")
STRIDE = 4
TREE_TABLE = "audit_tree_node"


def _leaf(content):
    content = dict(content)
    content["v"] = 1
    content["id"] = str(content["id"])
    content["occurred_at"] = (
        content["occurred_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
    raw = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")
    return hashlib.sha256(b"\x00" + raw).digest()


def _perfect_root(hashes):
    while len(hashes) > 1:
        hashes = [
            hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
            for i in range(0, len(hashes), 2)
        ]
    return hashes[0]


def _levels(leaves):
    """(level, position, hash) of every stored subtree over `leaves` (None: a leaf is
    missing, its event deleted; no subtree over it can be stored)."""
    below, level, width = leaves, 0, 1 << STRIDE
    while len(below) >= width:
        level += STRIDE
        above = []
        for position in range(len(below) // width):
            group = below[position * width : (position + 1) * width]
            above.append(None if None in group else _perfect_root(group))
        yield from ((level, p, h) for p, h in enumerate(above) if h is not None)
        below = above


def backfill(apps, schema_editor):
    link_model = apps.get_model("audit", "AuditLink")
    event_model = apps.get_model("audit", "AuditEvent")
    node_model = apps.get_model("audit", "AuditTreeNode")
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute("ALTER TABLE audit_link DISABLE TRIGGER audit_link_no_update_delete")
    elif vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_link_no_update")
    chains = link_model.objects.order_by().values_list("chain", flat=True).distinct()
    for chain in list(chains):
        links = list(link_model.objects.filter(chain=chain).order_by("seq"))
        events = {
            e["id"]: e
            for e in event_model.objects.filter(id__in=[link.event_id for link in links]).values(
                *SEQUENCER.MAC_FIELDS
            )
        }
        leaves = []
        for link in links:
            event = events.get(link.event_id)
            leaf = _leaf({**event, "seq": link.seq}) if event is not None else None
            leaves.append(leaf)
            if leaf is not None:
                link.leaf_hash = leaf.hex()
        link_model.objects.bulk_update(links, ["leaf_hash"], batch_size=1000)
        node_model.objects.bulk_create(
            [
                node_model(chain=chain, level=level, position=p, hash=h.hex())
                for level, p, h in _levels(leaves)
            ],
            batch_size=2000,
        )
    if vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE audit_link ENABLE ALWAYS TRIGGER audit_link_no_update_delete"
        )


def sqlite_triggers():
    """Every append-only trigger of the audit tables on SQLite (also used by the tests
    to put them back after emptying the tables)."""
    return [*SEQUENCER.sqlite_triggers(), *SEQUENCER._sqlite_table_triggers(TREE_TABLE)]


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(SEQUENCER._postgres_table_triggers(TREE_TABLE), params=None)
    elif vendor == "sqlite":
        # Adding a column rebuilds audit_link on SQLite, which drops its triggers.
        for statement in sqlite_triggers():
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_sequencer")]

    operations = [
        migrations.AddField(
            model_name="auditlink",
            name="leaf_hash",
            field=models.CharField(default="", max_length=64),
        ),
        migrations.CreateModel(
            name="AuditTreeNode",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("chain", models.CharField(max_length=80)),
                ("level", models.PositiveSmallIntegerField()),
                ("position", models.BigIntegerField()),
                ("hash", models.CharField(max_length=64)),
            ],
            options={
                "db_table": "audit_tree_node",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("chain", "level", "position"), name="audit_tree_node_unique"
                    )
                ],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.RunPython(install_triggers, migrations.RunPython.noop),
    ]
