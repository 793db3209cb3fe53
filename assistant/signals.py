"""Ending a session also ends the websockets opened with it."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

logger = logging.getLogger(__name__)


def session_group(session_key):
    """The channel group of the sockets opened with one session."""
    return f"session.{session_key}"


@receiver(user_logged_out)
def close_sockets_of_session(sender, request, user, **kwargs):
    session_key = request.session.session_key if request is not None else None
    if not session_key:
        return

    try:
        async_to_sync(get_channel_layer().group_send)(
            session_group(session_key), {"type": "session.ended"}
        )
    except Exception as exc:
        # Signing out must work even with the channel layer down, when the
        # sockets cannot do much anyway; they go at the next reconnect.
        logger.warning("Could not close the sockets of a signed-out session: %s", exc)
