"""A conversation as a tree of versions, and the one path the reader is shown.

Every message names the message it follows (Message.parent). Messages with
the same parent are versions of one turn: an answer regenerated, a question
edited and sent again. The conversation remembers the last message of the
branch on show (Conversation.current_leaf); the path from the first question
down to it is what the page draws, what the model reads and what the
Markdown export and the share view hold.

A whole conversation is read in one query and walked in memory: a
conversation is at most a few thousand messages, and reading it whole is
what the page does anyway.
"""

from django.utils import timezone

from chat.models import Conversation, Message

# What walking the tree needs of each message. The conversation's id too:
# a conversation's related manager checks it on every message it returns,
# and a deferred one would cost a query per message.
SKELETON_FIELDS = ("id", "parent_id", "shown_at", "conversation_id")


class Tree:
    """The messages of one conversation, indexed for walking."""

    def __init__(self, messages):
        # Meta.ordering (created, id) makes each list of children oldest first.
        self.by_id = {}
        self.children = {}
        for message in messages:
            self.by_id[message.pk] = message
            self.children.setdefault(message.parent_id, []).append(message)

    @classmethod
    def of(cls, conversation, messages=None):
        if messages is None:
            messages = conversation.messages.all()
        return cls(messages)

    def leaf_under(self, message):
        """The end of the branch under `message` (None: under the root) that
        the reader saw last.

        Where a branch forks, the version shown last is followed, then the
        newest: a new version is shown as soon as it is made.
        """
        node = message
        while True:
            versions = self.children.get(node.pk if node else None)
            if not versions:
                return node
            node = max(versions, key=lambda m: (m.shown_at, m.pk))

    def path_to(self, leaf):
        """The messages from the first question down to `leaf`, in order."""
        path = []
        seen = set()
        node = leaf
        while node is not None and node.pk not in seen:
            seen.add(node.pk)
            path.append(node)
            node = self.by_id.get(node.parent_id)
        path.reverse()
        return path

    def active_path(self, conversation):
        """The path on show: to the remembered leaf, then on down if it has
        children (a leaf that was never stored falls back to the newest)."""
        leaf = self.by_id.get(conversation.current_leaf_id)
        return self.path_to(self.leaf_under(leaf))

    def versions(self, message):
        """The message and its siblings, oldest first."""
        return self.children.get(message.parent_id, [message])

    def branch_data(self, message):
        """Where a message stands among its versions, for the "‹ 1/2 ›" control."""
        versions = self.versions(message)
        index = next(i for i, m in enumerate(versions) if m.pk == message.pk)
        return {
            "index": index + 1,
            "count": len(versions),
            "previous": versions[index - 1].pk if index > 0 else None,
            "next": versions[index + 1].pk if index + 1 < len(versions) else None,
        }


def skeleton(conversation):
    """The conversation's messages with only what walking the tree needs."""
    return conversation.messages.only(*SKELETON_FIELDS)


def active_path(conversation, messages=None):
    return Tree.of(conversation, messages).active_path(conversation)


def last_message(conversation):
    """The message a new question follows: the end of the path on show."""
    path = active_path(conversation, skeleton(conversation))
    return path[-1] if path else None


def show(conversation, message):
    """Put the branch through `message`, down to the end the reader saw
    last, on show; returns its last message."""
    branches = Tree(skeleton(conversation))
    leaf = branches.leaf_under(message)
    path_ids = [m.pk for m in branches.path_to(leaf)]
    Message.objects.filter(pk__in=path_ids).update(shown_at=timezone.now())
    conversation.current_leaf_id = leaf.pk
    # A switch is not activity: the conversation keeps its place by date.
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=leaf.pk)
    return leaf


def earlier_turns(conversation, reply):
    """The messages before `reply` on its own branch, oldest first.

    Two queries, whatever the size of the tree: the ids to walk, then the
    path's messages with what the prompt needs.
    """
    branches = Tree(skeleton(conversation))
    parent = branches.by_id.get(reply.parent_id)
    ids = [m.pk for m in branches.path_to(parent)]
    rows = Message.objects.filter(pk__in=ids).prefetch_related("attachments")
    by_id = {m.pk: m for m in rows}
    return [by_id[pk] for pk in ids]
