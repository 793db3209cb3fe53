"""How a reply's events travel from the worker to every browser watching.

Each event gets the next sequence number of its reply, is appended to the
reply's event log (assistant.eventlog) and is then sent to the
conversation's channel-layer group. A browser that arrives late reads the
log and follows the group, dropping any number it has already seen, so it
neither misses nor repeats text. Rendered HTML is sent live only: it can be
made again from the text at any time and would bloat the log.

Sending happens on a thread of its own, which takes whatever has piled up
since its last send and passes it on as one batch: one append to the log
and one group message. With a quiet channel layer every event goes out
alone and at once; when Redis is slow or busy, events travel in fewer,
larger messages instead of queueing one Redis round trip each behind it.
"""

import asyncio
import logging
import queue
import threading

from channels.layers import get_channel_layer

from assistant.eventlog import get_event_log

logger = logging.getLogger(__name__)

_CLOSE = object()
# Enough to carry a long batch, small enough that one message stays cheap.
MAX_BATCH_EVENTS = 200


class ReplyPublisher:
    """Publishes the events of one reply; used by the worker that writes it."""

    def __init__(self, message):
        self.message_id = message.pk
        self.stream_key = message.stream_key
        self.group = message.conversation.group_name
        self.seq = message.last_seq
        self._log = get_event_log()
        self._layer = get_channel_layer()
        self._outbox = queue.SimpleQueue()
        self._sender = threading.Thread(
            target=self._send_until_closed, name=f"reply-{self.message_id}", daemon=True
        )
        self._sender.start()

    def publish(self, kind, **data):
        self.seq += 1
        event = {"message_id": self.message_id, "seq": self.seq, "kind": kind, **data}
        self._outbox.put((event, True))
        return event

    def publish_live(self, kind, **data):
        """An event that is not logged: it carries no new information.

        It carries the number of the last logged event, and `live`, so that
        a consumer can tell it needs that event first (chat.consumers).
        """
        event = {
            "message_id": self.message_id,
            "seq": self.seq,
            "kind": kind,
            "live": True,
            **data,
        }
        self._outbox.put((event, False))

    def close(self, timeout=30):
        """Send what is still waiting, then stop the sender."""
        self._outbox.put(_CLOSE)
        self._sender.join(timeout)
        if self._sender.is_alive():
            logger.error("events of message %s still unsent at close", self.message_id)

    def _send_until_closed(self):
        # One event loop for the whole reply: the Redis channel layer keeps
        # connections per loop, and closes this loop's, only these, when the
        # loop closes.
        loop = asyncio.new_event_loop()
        try:
            closed = False
            while not closed:
                batch, closed = self._next_batch()
                if batch:
                    self._deliver(loop, batch)
        finally:
            loop.close()

    def _next_batch(self):
        """Block for one item, then take what else is already waiting."""
        items = [self._outbox.get()]
        while len(items) < MAX_BATCH_EVENTS:
            try:
                items.append(self._outbox.get_nowait())
            except queue.Empty:
                break

        closed = _CLOSE in items
        events = [item for item in items if item is not _CLOSE]
        return events, closed

    def _deliver(self, loop, batch):
        logged = [event for event, keep in batch if keep]
        events = [event for event, _keep in batch]
        try:
            if logged:
                self._log.extend(self.stream_key, logged)
        except Exception:
            logger.exception("could not log events of message %s", self.message_id)

        message = {"type": "reply.events", "events": events}
        try:
            loop.run_until_complete(self._layer.group_send(self.group, message))
        except Exception:
            # The log has the events; a browser that missed them reads them
            # from there when it next asks. The reply goes on.
            logger.exception(
                "could not send events %s-%s of message %s",
                events[0]["seq"],
                events[-1]["seq"],
                self.message_id,
            )
