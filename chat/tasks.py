import logging

from celery import shared_task

from chat import titling
from chat.generation import ReplyWriter
from chat.models import Message

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def generate_reply(message_id):
    """Write the assistant reply `message_id` by streaming it from the model.

    The reply row must exist and still be queued; a reply deleted or already
    written (a duplicate delivery) is skipped. One call holds one worker
    thread for as long as the model writes, which for R1 can be many minutes.
    """
    try:
        reply = Message.objects.select_related("conversation__user").get(
            pk=message_id, role=Message.Role.ASSISTANT
        )
    except Message.DoesNotExist:
        logger.info("reply %s was deleted before it could be written", message_id)
        return

    if reply.status != Message.Status.QUEUED:
        logger.warning("reply %s is %s, not queued; skipped", message_id, reply.status)
        return

    ReplyWriter(reply).run()

    if reply.status == Message.Status.STOP and titling.wants_title(reply.conversation):
        title_conversation.delay(reply.conversation_id)


@shared_task(ignore_result=True)
def title_conversation(conversation_id):
    """Replace a new conversation's first-words title with the model's.

    One short request at batch priority; on any failure the first words
    stay, and a title the user typed meanwhile is never replaced.
    """
    titling.retitle(conversation_id)
