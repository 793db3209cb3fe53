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


# While the title model's queue is busy a title is asked again this much
# later, for up to TITLE_RETRIES times (ten minutes); then the first words stay.
TITLE_RETRY_SECONDS = 30
TITLE_RETRIES = 20


@shared_task(bind=True, ignore_result=True, max_retries=TITLE_RETRIES)
def title_conversation(self, conversation_id):
    """Replace a new conversation's first-words title with the model's.

    One short request at batch priority; on any failure the first words
    stay, and a title the user typed meanwhile is never replaced. While the
    model is busy the task does not wait in its queue, holding a worker
    thread a reply may need, but is run again later.
    """
    if titling.model_is_busy(conversation_id):
        if self.request.retries >= TITLE_RETRIES:
            logger.info("no title for conversation %s: model busy", conversation_id)
            return
        raise self.retry(countdown=TITLE_RETRY_SECONDS)
    titling.retitle(conversation_id)
