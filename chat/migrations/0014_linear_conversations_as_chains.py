"""Conversations from before branches become one chain each.

Every message follows the one before it (by time, then id), and the
conversation shows the chain down to its last message. A message was last
shown when it was written. Going back forgets the tree; the messages stay.
"""

from django.db import migrations
from django.db.models import F

BATCH_SIZE = 500


def chain_messages(apps, schema_editor):
    Conversation = apps.get_model("chat", "Conversation")
    Message = apps.get_model("chat", "Message")
    Message.objects.update(shown_at=F("created"))
    for conversation in Conversation.objects.only("id").iterator():
        messages = list(
            Message.objects.filter(conversation_id=conversation.pk)
            .only("id", "parent_id")
            .order_by("created", "id")
        )
        if not messages:
            continue
        for before, message in zip(messages, messages[1:]):
            message.parent_id = before.pk
        Message.objects.bulk_update(messages, ["parent"], batch_size=BATCH_SIZE)
        Conversation.objects.filter(pk=conversation.pk).update(
            current_leaf=messages[-1].pk
        )


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0013_message_tree"),
    ]

    operations = [
        migrations.RunPython(chain_messages, migrations.RunPython.noop),
    ]
