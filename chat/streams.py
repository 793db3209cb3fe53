"""How a reply's events travel from the worker to every browser watching.

Each event gets the next sequence number of its reply, is appended to the
reply's event log (assistant.eventlog) and is then sent to the
conversation's channel-layer group. A browser that arrives late reads the
log and follows the group, dropping any number it has already seen, so it
neither misses nor repeats text. Rendered HTML is sent live only: it can be
made again from the text at any time and would bloat the log.
"""

import asyncio
import logging

from channels.layers import get_channel_layer

from assistant.eventlog import get_event_log

logger = logging.getLogger(__name__)


class ReplyPublisher:
    """Publishes the events of one reply; used by the worker that writes it."""

    def __init__(self, message):
        self.message_id = message.pk
        self.stream_key = message.stream_key
        self.group = message.conversation.group_name
        self.seq = message.last_seq
        self._log = get_event_log()
        self._layer = get_channel_layer()
        # One event loop for the whole reply: the Redis channel layer keeps a
        # connection per loop, and a loop per event would open one each time.
        self._loop = asyncio.new_event_loop()

    def publish(self, kind, **data):
        self.seq += 1
        event = {"message_id": self.message_id, "seq": self.seq, "kind": kind, **data}
        self._log.append(self.stream_key, event)
        self._send(event)
        return event

    def publish_live(self, kind, **data):
        """An event that is not logged: it carries no new information."""
        event = {"message_id": self.message_id, "seq": self.seq, "kind": kind, **data}
        self._send(event)

    def close(self):
        close_pools = getattr(self._layer, "close_pools", None)
        try:
            if close_pools is not None:
                self._loop.run_until_complete(close_pools())
        finally:
            self._loop.close()

    def _send(self, event):
        message = {"type": "reply.event", "event": event}
        try:
            self._loop.run_until_complete(self._layer.group_send(self.group, message))
        except Exception:
            # The log has the event; a browser that missed it will read it
            # from there on its next connect. The reply goes on.
            logger.exception(
                "could not send event %s of message %s", event["seq"], self.message_id
            )
