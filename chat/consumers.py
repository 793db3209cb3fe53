"""The chat websocket: one per open page, following one conversation at a time.

The browser sends actions (`watch`, `send`, `stop`, `retry`, and for
branches `regenerate`, `edit`, `switch`, `path`); the worker's
events reach it through the conversation's group. Until a queued reply's
worker says where the reply stands, this socket tells the page its estimate
(chat.queue_places). Validation failures come back as short codes the page
translates, so the user's text stays in the composer and nothing is lost.
"""

import asyncio
import contextvars
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q

from assistant.admission import QueuePlace
from assistant.eventlog import get_event_log
from assistant.models import ModelProfile
from assistant.signals import session_group
from chat import actions, presets, queue_places
from chat.models import Conversation, Message
from chat.recovery import abandoned_replies, recover_abandoned
from chat.views import message_data, offered_model_names, offered_profile, path_data

logger = logging.getLogger(__name__)

# Close code for a socket opened without a signed-in session (4000-4999 are
# the application's own).
CLOSE_UNAUTHENTICATED = 4401
# A page asks after the replies it shows as open; a handful is plenty.
MAX_WATCHED_REPLIES = 20
# A reply whose worker has not said anything yet, but may go straight in
# once it starts: the next in line.
NEXT_IN_LINE = QueuePlace(position=1, ahead_cost=0, eta=None)


# Channels runs the database calls of every socket of the process in one
# shared thread (django/channels#2132), so sixty people asking at once would
# wait on each other's writes one by one. Each action of a socket takes its
# turn in one of a few threads instead, in rotation: actions run side by side
# while the database connections the sockets hold stay bounded (one a thread,
# kept for CONN_MAX_AGE as Django keeps any). A socket still handles its own
# actions in the order they came.
_action_threads = [
    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"chat-action-{number}")
    for number in range(settings.CHAT_ACTION_THREADS)
]
_action_turns = itertools.count()


@asynccontextmanager
async def on_an_action_thread():
    """Run the database calls inside on the next of the action threads."""
    async with ThreadSensitiveContext(executor=next_action_thread()):
        try:
            yield
        finally:
            # As Django does when a request ends: the thread's connection
            # is closed once past CONN_MAX_AGE or broken. The thread
            # outlives the action, and so would the connection.
            await sync_to_async(close_old_connections)()


def next_action_thread():
    """The executor for a socket action's database calls, in rotation.

    Given to the context rather than left for it to make, so that it is used
    even under an enclosing async_to_sync, as in tests.
    """
    return _action_threads[next(_action_turns) % len(_action_threads)]


class ChatConsumer(AsyncJsonWebsocketConsumer):
    # The actions a page may send, and the method that handles each. Every
    # one that names a conversation or message must refuse another user's:
    # tests/test_outsider_audit.py checks each action listed here.
    ACTIONS = {
        "watch": "watch",
        "send": "send_question",
        "stop": "stop_reply",
        "retry": "retry_reply",
        "regenerate": "regenerate_reply",
        "edit": "edit_question",
        "switch": "switch_branch",
        "path": "send_path",
    }

    async def connect(self):
        self.user = self.scope.get("user")
        # The last event number of each reply this socket has been sent.
        self.sent_seq = {}
        # The queued replies whose place this socket tells its page until
        # their workers report (follow_place).
        self.place_followers = {}
        self.group = None
        self.session_group_name = None
        if self.user is None or not self.user.is_authenticated:
            # Accepted first: a socket closed during the handshake reaches
            # the browser as a bare failure (1006), which the page would
            # take for a network blip and retry for ever; 4401 after the
            # handshake tells it to sign in again.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return

        # Signing out of this session closes the socket (assistant.signals).
        session = self.scope.get("session")
        if session is not None and session.session_key:
            self.session_group_name = session_group(session.session_key)
            await self.channel_layer.group_add(
                self.session_group_name, self.channel_name
            )
        await self.accept()

    async def disconnect(self, code):
        self._stop_following_places()
        await self._leave_group()
        if self.session_group_name is not None:
            await self.channel_layer.group_discard(
                self.session_group_name, self.channel_name
            )

    async def receive_json(self, content, **kwargs):
        action = content.get("action") if isinstance(content, dict) else None
        if action not in self.ACTIONS:
            await self._refuse("bad_request")
            return

        async with on_an_action_thread():
            await getattr(self, self.ACTIONS[action])(content)

    async def watch(self, content):
        conversation = await self._get_conversation(content.get("conversation_id"))
        if conversation is None:
            await self._refuse("not_found")
            return

        await self._join_group(conversation.group_name)
        asked_ids = content.get("open_replies")
        if not isinstance(asked_ids, list):
            asked_ids = []
        for snapshot in await self._reply_snapshots(conversation, asked_ids):
            numbers = [snapshot["message"]["seq"]]
            numbers += [event["seq"] for event in snapshot["events"]]
            self.sent_seq[snapshot["message_id"]] = max(numbers)
            await self.send_json(snapshot)
            if snapshot["message"]["status"] == Message.Status.QUEUED:
                self.follow_place(snapshot["message_id"], snapshot["message"]["model"])

    async def send_question(self, content):
        text = content.get("text")
        profile = await self._text_and_model_fit(text, content.get("model"))
        if profile is None:
            return

        conversation_id = content.get("conversation_id")
        if conversation_id:
            conversation = await self._get_conversation(conversation_id)
            if conversation is None:
                await self._refuse("not_found")
                return
        else:
            preset = None
            if content.get("preset"):
                preset = await database_sync_to_async(presets.find_preset)(
                    self.user, content["preset"]
                )
                if preset is None:
                    await self._refuse("unknown_preset")
                    return
            conversation = await database_sync_to_async(actions.start_conversation)(
                self.user, profile.name, text, preset
            )

        # Join before the reply is queued, so its first event cannot be missed.
        await self._join_group(conversation.group_name)
        posted = await self._post(
            conversation, content, profile, started=not conversation_id
        )
        self.sent_seq[posted["reply"]["id"]] = posted["reply"]["seq"]
        await self.send_json({**posted, "client_token": content.get("client_token")})
        self.follow_place(
            posted["reply"]["id"],
            profile.name,
            profile,
            place_shown="expected_queue" in posted,
        )
        if not conversation_id:
            # No other tab can be showing a conversation begun a moment ago.
            return
        # Other tabs on the same conversation show the question and follow
        # the reply too.
        await self.channel_layer.group_send(
            conversation.group_name,
            {
                "type": "conversation.posted",
                "posted": posted,
                "sender": self.channel_name,
            },
        )

    @database_sync_to_async
    def _post(self, conversation, content, profile, started):
        """Store the question and its queued reply in one trip to the database.

        One trip, not one per step: in a burst of questions each trip waits
        its turn for a thread (next_action_thread). Returns the `posted`
        message, with the place the reply may expect in the queue, taken
        before the reply exists, so that the page shows it with the
        question instead of a bare spinner until the worker reports.
        """
        attachment_ids = content.get("attachment_ids")
        if not isinstance(attachment_ids, list):
            attachment_ids = []
        parent = None
        if content.get("parent_id") is not None:
            parent = conversation.messages.filter(
                pk=_as_int(content["parent_id"])
            ).first()

        with queue_places.posting_to(profile.name) as posting:
            place = self._expected_place(profile, posting)
            question, reply = actions.post_question(
                conversation,
                content.get("text"),
                profile.name,
                attachment_ids,
                parent,
                new_conversation=started,
                posting=posting,
            )
        posted = {
            "type": "posted",
            "conversation": {
                "id": conversation.pk,
                "title": conversation.title,
                "url": conversation.get_absolute_url(),
            },
            "question": message_data(question),
            "reply": message_data(reply),
        }
        if place is not None:
            posted["expected_queue"] = queue_places.expected_queue_data(place)
        return posted

    def _expected_place(self, profile, posting):
        try:
            return queue_places.expected_place(self.user.pk, profile, posting)
        except Exception:  # noqa: BLE001 - the worker's own notices follow anyway
            logger.warning("no queue estimate for %s", profile.name, exc_info=True)
            return None

    async def stop_reply(self, content):
        reply = await self._get_reply(content.get("message_id"))
        if reply is None:
            await self._refuse("not_found")
            return
        await database_sync_to_async(actions.request_stop)(reply)

    async def retry_reply(self, content):
        reply = await self._get_reply(content.get("message_id"))
        if reply is None or reply.is_open:
            await self._refuse("not_found")
            return

        mode = content.get("mode", actions.RetryMode.SAME)
        if mode not in actions.RETRY_MODES:
            await self._refuse("bad_request")
            return

        await self._join_group(reply.conversation.group_name)
        reset = await database_sync_to_async(actions.retry_reply)(reply, mode)
        await self.channel_layer.group_send(
            reply.conversation.group_name, {"type": "reply.events", "events": [reset]}
        )
        # Not followed: a retry keeps the row, and with it the place among
        # the open replies of its first attempt, ahead of everything posted
        # since. Its worker's reports alone say where it stands.

    async def regenerate_reply(self, content):
        reply = await self._get_reply(content.get("message_id"))
        if reply is None:
            await self._refuse("not_found")
            return
        model = content.get("model") or reply.model
        if model not in await database_sync_to_async(offered_model_names)():
            await self._refuse("unknown_model")
            return
        if await database_sync_to_async(actions.has_open_reply)(reply.conversation):
            await self._refuse("busy")
            return

        await self._join_group(reply.conversation.group_name)
        made = await database_sync_to_async(actions.regenerate_reply)(reply, model)
        if made is None:
            await self._refuse("not_found")
            return
        await self._announce_path(reply.conversation)
        self.follow_place(made.pk, model)

    async def edit_question(self, content):
        question = await self._get_question(content.get("message_id"))
        if question is None:
            await self._refuse("not_found")
            return
        text = content.get("text")
        model = content.get("model")
        if not await self._text_and_model_fit(text, model):
            return
        if await database_sync_to_async(actions.has_open_reply)(question.conversation):
            await self._refuse("busy")
            return

        await self._join_group(question.conversation.group_name)
        _edited, reply = await database_sync_to_async(actions.edit_question)(
            question, text, model
        )
        await self._announce_path(question.conversation)
        self.follow_place(reply.pk, model)

    async def switch_branch(self, content):
        """Show another version of a message, with that version's continuation.

        Refused while a reply is written: the page would hide a reply that
        still streams, and its Stop with it.
        """
        message = await self._get_own_message(content.get("message_id"))
        if message is None:
            await self._refuse("not_found")
            return
        conversation = message.conversation
        if await database_sync_to_async(actions.has_open_reply)(conversation):
            await self._refuse("busy")
            return

        await self._join_group(conversation.group_name)
        await database_sync_to_async(actions.show_branch)(conversation, message)
        await self._announce_path(conversation)

    async def send_path(self, content):
        """The branch on show, for a page that finds it is behind."""
        conversation = await self._get_conversation(content.get("conversation_id"))
        if conversation is None:
            await self._refuse("not_found")
            return
        await self.send_json(await self._path_message(conversation))

    async def conversation_path(self, message):
        conversation = await self._get_conversation(message["conversation_id"])
        if conversation is not None:
            await self.send_json(await self._path_message(conversation))

    async def reply_events(self, message):
        self._stop_following_reported(message["events"])
        events = await self._in_order(message["events"])
        if events:
            await self.send_json({"type": "replies", "events": events})

    async def _in_order(self, events):
        """The events with each reply's numbers in order and none twice.

        channels_redis can hand a process's messages over out of order when
        another socket of the process closes while a message is in flight
        (django/channels_redis#151); the page drops any number at or below
        the last it has, so a late batch would be lost to it until the
        reply's end. A number that jumps ahead is preceded here by the
        events in between, read from the reply's event log, and the late
        batch is then dropped as already sent.
        """
        ordered = []
        for event in events:
            reply_id, seq = event["message_id"], event["seq"]
            sent = self.sent_seq.get(reply_id)
            live = event.get("live", False)
            if sent is not None:
                wanted = seq if live else seq - 1
                if wanted > sent:
                    ordered.extend(await self._logged_events(reply_id, sent, wanted))
                    sent = wanted
                if not live and seq <= sent:
                    continue
            if not live:
                sent = seq
            self.sent_seq[reply_id] = sent
            ordered.append(event)
        return ordered

    @database_sync_to_async
    def _logged_events(self, reply_id, after, up_to):
        stream_key = (
            Message.objects.filter(pk=reply_id).values_list("stream_key", flat=True)
        ).first()
        if stream_key is None:
            return []

        found = [
            event
            for event in get_event_log().read(stream_key)
            if after < event["seq"] <= up_to
        ]
        logger.info(
            "reply %s: events %s-%s arrived out of order; %s sent from the log",
            reply_id,
            after + 1,
            up_to,
            len(found),
        )
        return found

    async def conversation_posted(self, message):
        if message["sender"] != self.channel_name:
            reply = message["posted"]["reply"]
            self.sent_seq.setdefault(reply["id"], reply["seq"])
            await self.send_json(message["posted"])
            self.follow_place(
                reply["id"],
                reply["model"],
                place_shown="expected_queue" in message["posted"],
            )

    def follow_place(self, reply_id, model, profile=None, place_shown=False):
        """Tell this page where a queued reply stands until its worker does.

        The worker reports the place its ticket holds once it runs the
        reply's task, which on a busy host may be seconds after the question
        was posted; until then the page hears this process's estimate every
        PLACE_INTERVAL, as it would hear the worker.
        """
        if reply_id in self.place_followers:
            return
        if len(self.place_followers) >= MAX_WATCHED_REPLIES:
            return
        # A context of its own: the action that starts it ends long before
        # it does, and with the action its thread context.
        self.place_followers[reply_id] = asyncio.create_task(
            self._tell_place_until_reported(reply_id, model, profile, place_shown),
            context=contextvars.Context(),
        )

    async def _tell_place_until_reported(self, reply_id, model, profile, place_shown):
        # Bounded like the worker's own wait; a reply whose task never runs
        # is ended by the recovery of abandoned replies, not here.
        deadline = time.monotonic() + settings.QUEUE_TIMEOUT
        try:
            if profile is None:
                async with on_an_action_thread():
                    profile = await self._profile_named(model)
            if profile is None or profile.concurrency_limit is None:
                return
            while time.monotonic() < deadline:
                await asyncio.sleep(queue_places.PLACE_INTERVAL)
                place = await self._place_of_reply(reply_id, profile)
                if place is queue_places.NOT_QUEUED:
                    return
                if place is None and not place_shown:
                    # It goes straight in once its worker starts: nothing
                    # to tell beyond "queued".
                    continue
                place_shown = True
                await self.send_json(
                    {
                        "type": "replies",
                        "events": [self._estimated_place_event(reply_id, place)],
                    }
                )
        except Exception:  # noqa: BLE001 - the worker's own reports follow anyway
            logger.warning("no queue estimate for reply %s", reply_id, exc_info=True)
        finally:
            # A cancelled follower may end after another took its place.
            if self.place_followers.get(reply_id) is asyncio.current_task():
                del self.place_followers[reply_id]

    def _estimated_place_event(self, reply_id, place):
        place = place or NEXT_IN_LINE
        return {
            "message_id": reply_id,
            "seq": self.sent_seq.get(reply_id, 0),
            "kind": "queue",
            "live": True,
            # Not the worker's report: the page drops it once it has one.
            "expected": True,
            "position": place.position,
            "eta": place.eta,
        }

    async def _place_of_reply(self, reply_id, profile):
        async with on_an_action_thread():
            return await database_sync_to_async(queue_places.place_of_reply)(
                reply_id, profile
            )

    @database_sync_to_async
    def _profile_named(self, model):
        return ModelProfile.objects.filter(name=model).first()

    def _stop_following_reported(self, events):
        """Stop estimating the places of replies whose workers now speak.

        A retry's reset comes from the page's action, not from the worker.
        """
        for event in events:
            if event.get("expected") or event.get("kind") == "reset":
                continue
            follower = self.place_followers.pop(event["message_id"], None)
            if follower is not None:
                follower.cancel()

    def _stop_following_places(self):
        for follower in self.place_followers.values():
            follower.cancel()
        self.place_followers.clear()

    async def conversation_renamed(self, message):
        await self.send_json(
            {
                "type": "renamed",
                "conversation_id": message["conversation_id"],
                "title": message["title"],
            }
        )

    async def session_ended(self, message):
        self._stop_following_places()
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def _text_and_model_fit(self, text, model):
        """The profile of the question's model if the text and model are fine;
        else None, with the reason said to the page."""
        if not isinstance(text, str) or not text.strip():
            await self._refuse("empty")
            return None
        if len(text) > settings.MAX_MESSAGE_CHARS:
            await self._refuse(
                "too_long", limit=settings.MAX_MESSAGE_CHARS, size=len(text)
            )
            return None
        profile = await database_sync_to_async(offered_profile)(model)
        if profile is None:
            await self._refuse("unknown_model")
        return profile

    async def _announce_path(self, conversation):
        # Every page on the conversation, this one included, redraws from
        # the same message, so all of them show the same branch.
        await self.channel_layer.group_send(
            conversation.group_name,
            {"type": "conversation.path", "conversation_id": conversation.pk},
        )

    @database_sync_to_async
    def _path_message(self, conversation):
        return {
            "type": "path",
            "conversation_id": conversation.pk,
            "messages": path_data(conversation),
        }

    async def _refuse(self, code, **params):
        await self.send_json({"type": "refused", "code": code, **params})

    async def _join_group(self, group):
        if group == self.group:
            return
        await self._leave_group()
        await self.channel_layer.group_add(group, self.channel_name)
        self.group = group

    async def _leave_group(self):
        # The page no longer shows that conversation's replies.
        self._stop_following_places()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    @database_sync_to_async
    def _get_conversation(self, conversation_id):
        return (
            Conversation.objects.visible()
            .filter(pk=_as_int(conversation_id), user=self.user)
            .first()
        )

    @database_sync_to_async
    def _get_reply(self, message_id):
        return (
            Message.objects.select_related("conversation")
            .filter(
                pk=_as_int(message_id),
                role=Message.Role.ASSISTANT,
                conversation__user=self.user,
                conversation__deleted_at__isnull=True,
            )
            .first()
        )

    @database_sync_to_async
    def _get_question(self, message_id):
        return (
            self._own_messages()
            .filter(pk=_as_int(message_id), role=Message.Role.USER)
            .first()
        )

    @database_sync_to_async
    def _get_own_message(self, message_id):
        return self._own_messages().filter(pk=_as_int(message_id)).first()

    def _own_messages(self):
        return Message.objects.select_related("conversation").filter(
            conversation__user=self.user, conversation__deleted_at__isnull=True
        )

    @database_sync_to_async
    def _reply_snapshots(self, conversation, asked_ids):
        """The state of each reply still being written, or that the page
        believes is: the stored row, plus the logged events newer than it.

        Read after joining the group: an event sent in between arrives twice,
        once here and once live, and the page drops the second by its number.
        A reply that ended while the page was away comes back whole, so a
        missed "end" cannot leave a bubble open.
        """
        # A reply whose worker died is ended first, so the page gets it
        # whole instead of following a stream nobody writes.
        recover_abandoned(abandoned_replies().filter(conversation=conversation))
        replies = conversation.messages.filter(role=Message.Role.ASSISTANT).filter(
            Q(status__in=[Message.Status.QUEUED, Message.Status.STREAMING])
            | Q(pk__in=[_as_int(pk) for pk in asked_ids][:MAX_WATCHED_REPLIES])
        )
        log = get_event_log()
        snapshots = []
        for reply in replies:
            newer = [e for e in log.read(reply.stream_key) if e["seq"] > reply.last_seq]
            snapshots.append(
                {
                    "type": "snapshot",
                    "message_id": reply.pk,
                    "message": message_data(reply),
                    "events": newer,
                }
            )
        return snapshots


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
