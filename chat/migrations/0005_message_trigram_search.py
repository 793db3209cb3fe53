"""Trigram indexes that let PostgreSQL answer chat search without a scan.

Search matches substrings case-insensitively (`icontains`, which Django
writes as UPPER(column) LIKE UPPER(pattern) on PostgreSQL), so the indexes
are on UPPER(...) with gin_trgm_ops. Creating the pg_trgm extension needs a
role allowed to; where the app's role is not, the migration logs the
statements for a superuser to run by hand, and search still works, only
slower. SQLite gets nothing here.
"""

import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger(__name__)

INDEXES = {
    "chat_message_content_trgm": "content",
    "chat_message_reasoning_trgm": "reasoning",
}


def create_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        # This migration is recorded as applied all the same, so migrating
        # again would not come back here: the log gives the statements.
        logger.warning(
            "pg_trgm is not available (%s); chat search will scan messages. "
            "A superuser can run, in the app's database: "
            "CREATE EXTENSION pg_trgm; %s",
            exc,
            " ".join(f"{statement};" for statement in index_statements()),
        )
        return
    for statement in index_statements():
        schema_editor.execute(statement)


def index_statements():
    return [
        f"CREATE INDEX IF NOT EXISTS {name} ON chat_message "
        f"USING gin (UPPER({column}) gin_trgm_ops)"
        for name, column in INDEXES.items()
    ]


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("chat", "0004_conversation_pin_delete")]

    operations = [migrations.RunPython(create_indexes, drop_indexes)]
