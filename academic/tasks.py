import logging

from celery import shared_task

from academic import actions
from academic.generation import ChunkWriter
from academic.models import PolishChunk

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def polish_chunk(chunk_id):
    """Polish, check or translate the chunk `chunk_id`, then close its job
    and run the compile check if it was the last one.

    A chunk deleted with its job, or no longer queued (a duplicate delivery,
    a cancelled job), is skipped. One call holds one worker thread while the
    chunk waits for a slot and while the model writes.
    """
    try:
        chunk = PolishChunk.objects.select_related("job", "file").get(pk=chunk_id)
    except PolishChunk.DoesNotExist:
        logger.info("chunk %s was deleted before it could be polished", chunk_id)
        return

    if chunk.status != PolishChunk.Status.QUEUED:
        logger.info("chunk %s is %s, not queued; skipped", chunk_id, chunk.status)
    else:
        ChunkWriter(chunk).run()

    if chunk.job.finish_if_complete():
        actions.check_compiles(chunk.job)
