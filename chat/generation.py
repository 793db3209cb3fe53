"""Writing one assistant reply: from the prompt to the stored, ended message.

The worker owns the stream. It sends each piece to the browsers as it
arrives (chat.streams), writes the row to the database every
STREAM_SAVE_INTERVAL and at the end, and keeps watching for a Stop, which it
turns into a cut of the upstream connection so the GPU stops working too.
"""

import logging
import time

import openai
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from academic.reading import paper_system_prompt
from assistant import backoff, failures, metering, quotas
from assistant.admission import INTERACTIVE, Cancelled, TimedOut, wait_for_slot
from assistant.backends import connection_for_profile
from assistant.completion import StreamGuard, pool_name
from assistant.modelapi import open_chat_stream
from assistant.models import ModelProfile, UsageRecord
from assistant.streaming import (
    ReplyParser,
    ReplyStatus,
    SSEComment,
    feed_sse_item,
    iter_sse,
)
from chat.models import Conversation, Message
from chat.presets import request_params, requested_output_limit, thinking_enabled
from chat.prompt import (
    build_messages,
    can_extend,
    count_text_tokens,
    estimate_tokens,
    output_budget,
    trim_to_fit,
)
from chat.recovery import ReplyHeartbeat
from chat.rendering import render_markdown
from chat.streams import ReplyPublisher

logger = logging.getLogger(__name__)

# The estimate over-counts by up to about a third, so only a server count
# under half of it means the server dropped part of the input.
TRUNCATION_RATIO = 0.5
# How often a reply waiting out a busy server tells the browsers so.
BUSY_NOTICE_INTERVAL = 0.5


class ReplyWriter:
    def __init__(self, reply):
        self.reply = reply
        self.profile = None
        self.parser = None
        self.publisher = None
        self.started = None
        self.first_reasoning_at = None
        self.first_answer_at = None
        # The wall-clock time of the first answer text, in case it turns out
        # to have been the reasoning's start.
        self.first_answer_wall = None
        self.last_saved = 0.0
        self.last_rendered = 0.0
        self.rendered_chars = -1
        self.render_interval = settings.STREAM_RENDER_INTERVAL
        self.stopped = False
        self.thinking = True
        self.lease = None

    def run(self):
        self.publisher = ReplyPublisher(self.reply)
        try:
            with ReplyHeartbeat(self.reply.pk):
                self._run()
        except Exception as exc:  # noqa: BLE001 - every failure ends the reply
            self._fail(exc)
        finally:
            self.publisher.close()

    def _run(self):
        if cache.get(self.reply.stop_key):
            self._finish(Message.Status.STOPPED)
            return

        self.profile = ModelProfile.ensure(self.reply.model)
        self.thinking = thinking_enabled(self.reply.conversation, self.profile)
        # With thinking off the template writes no opening think tag (Qwen3
        # writes an empty block), so the stream starts in the answer.
        self.parser = ReplyParser(
            starts_in_reasoning=self.profile.starts_in_reasoning and self.thinking,
            reasoning_model=self.profile.is_reasoning and self.thinking,
        )
        messages = self._prompt()
        if self.reply.prompt_estimate > self.profile.input_limit:
            self._finish_too_long()
            return
        if self._over_quota():
            return

        max_tokens = self._output_limit()
        self.lease = self._wait_for_slot()
        if self.lease is None:
            return

        with self.lease:
            self._mark_streaming()
            self._stream(messages, max_tokens)

    def _stream(self, messages, max_tokens):
        """Read the reply, asking again while the server says it is busy.

        The lease is kept through the waits: the reply keeps its place, and
        the requests queued behind it would only be refused as well.
        """
        refusals = 0
        params = request_params(self.reply.conversation, self.profile)
        while True:
            try:
                with open_chat_stream(
                    self.reply.model, messages, max_tokens, **params
                ) as stream:
                    with StreamGuard(self.reply.stop_key, stream) as guard:
                        self._read(stream, guard)
                return
            except openai.APIStatusError as exc:
                if not backoff.is_busy(exc):
                    raise
                refusals += 1
                wait = backoff.next_wait(exc, refusals)
                if wait is None:
                    raise
                if not self._wait_out_busy(exc, wait, refusals):
                    self._finish(Message.Status.STOPPED)
                    return

    def _wait_out_busy(self, exc, wait, refusals):
        """Sleep `wait` seconds, telling the browsers; False if stopped meanwhile."""
        logger.warning(
            "reply %s: model server busy (%s, %s of %s), asking again in %.1f s",
            self.reply.pk,
            exc.status_code,
            refusals,
            settings.MODEL_API_BUSY_RETRIES,
            wait,
        )
        waited_from = time.monotonic()
        retry_at = waited_from + wait
        while (remaining := retry_at - time.monotonic()) > 0:
            if cache.get(self.reply.stop_key):
                return False
            self.publisher.publish_live(
                "busy",
                status_code=exc.status_code,
                seconds=round(remaining, 1),
                attempt=refusals,
                attempts=settings.MODEL_API_BUSY_RETRIES,
            )
            time.sleep(min(remaining, BUSY_NOTICE_INTERVAL))

        # The wait is time the reply spent queued, not generating.
        self.reply.queue_ms = (self.reply.queue_ms or 0) + _ms(
            time.monotonic() - waited_from
        )
        self.started = time.monotonic()
        return True

    def _prompt(self):
        # A conversation about a paper opens with the passages relevant to
        # the question instead of the usual system prompt.
        system_prompt = paper_system_prompt(self.reply, self.profile)
        messages = build_messages(self.reply.conversation, self.reply, system_prompt)
        if self.reply.trim_history:
            messages, dropped = trim_to_fit(messages, self.profile.input_limit)
            logger.info("reply %s leaves out %s old exchanges", self.reply.pk, dropped)
        self.reply.prompt_estimate = estimate_tokens(messages)
        return messages

    def _output_limit(self):
        reply = self.reply
        reply.max_tokens = output_budget(
            self.profile,
            reply.prompt_estimate,
            reply.max_tokens_override,
            requested=requested_output_limit(reply.conversation, self.profile),
        )
        if (
            self.profile.is_reasoning
            and self.thinking
            and reply.max_tokens < settings.REASONING_MIN_OUTPUT_TOKENS
        ):
            # R1 may spend all of it thinking; the reader is told why an
            # answer may be missing.
            reply.warning_code = "low_output_budget"
        return reply.max_tokens

    def _over_quota(self):
        """End the reply at once, unsent, if the user's quotas do not allow it."""
        refusal = quotas.check_quota(
            self.reply.conversation.user,
            needed_tokens=self.reply.prompt_estimate,
            count_open=self._count_other_open_replies,
        )
        if refusal is None:
            return False

        logger.info("reply %s refused: %s", self.reply.pk, refusal.code)
        self._finish(Message.Status.ERROR, refusal.code, params=refusal.params)
        return True

    def _count_other_open_replies(self):
        """The user's other requests in flight: replies and any other work.

        Replies queued after this one do not count, so that of two sent at
        once the first goes ahead. The user's polish chunks, conversions and
        other requests in flight count too (assistant.quotas). A request left
        open by a worker that died stops counting once it is older than any
        request could be.
        """
        reply = self.reply
        user_id = reply.conversation.user_id
        other_replies = (
            Message.objects.filter(
                conversation__user_id=user_id,
                role=Message.Role.ASSISTANT,
                created__gte=quotas.in_flight_since(),
            )
            .filter(
                Q(status=Message.Status.STREAMING)
                | Q(status=Message.Status.QUEUED, pk__lt=reply.pk)
            )
            .exclude(pk=reply.pk)
            .count()
        )
        return other_replies + quotas.open_requests_outside_chat(user_id)

    def _wait_for_slot(self):
        """A lease on the backend's capacity, after a fair wait if it is busy.

        While waiting, the browsers watching hear the reply's place in the
        queue at least once a second. Returns None when the reply ended
        while queued (stopped, or waited longer than QUEUE_TIMEOUT).
        """
        reply = self.reply
        queued_at = time.monotonic()

        def tell_position(position, eta):
            self.publisher.publish_live("queue", position=position, eta=eta)

        try:
            lease = wait_for_slot(
                pool=pool_name(reply.model, connection_for_profile(self.profile)),
                user_key=str(reply.conversation.user_id),
                priority=INTERACTIVE,
                capacity=self.profile.concurrency_limit,
                cost=self.profile.admission_cost(reply.prompt_estimate),
                on_wait=tell_position,
                cancelled=lambda: bool(cache.get(reply.stop_key)),
                timeout=settings.QUEUE_TIMEOUT,
            )
        except Cancelled:
            self._finish(Message.Status.STOPPED)
            return None
        except TimedOut:
            self._finish(Message.Status.ERROR, "queue_timeout")
            return None

        reply.queue_ms = _ms(time.monotonic() - queued_at)
        return lease

    def _mark_streaming(self):
        self.started = time.monotonic()
        self.reply.status = Message.Status.STREAMING
        self.reply.started_at = timezone.now()
        self.reply.save(
            update_fields=[
                "status",
                "started_at",
                "queue_ms",
                "prompt_estimate",
                "max_tokens",
                "warning_code",
            ]
        )
        self.publisher.publish(
            "status",
            status=Message.Status.STREAMING,
            warning_code=self.reply.warning_code,
        )

    def _read(self, stream, guard):
        try:
            for item in iter_sse(stream.lines()):
                if stream.cut_requested.is_set():
                    break
                if isinstance(item, SSEComment):
                    # Keep-alive: the server is alive but has nothing to say.
                    continue
                guard.saw_data()
                self._handle(feed_sse_item(item, self.parser))
                if self.parser.ended:
                    # [DONE] or an error: a server may keep the connection
                    # open after either, so reading on could only wait.
                    break
        except (*failures.TRANSPORT_ERRORS, OSError) as exc:
            if not stream.cut_requested.is_set():
                if guard.last_data_at is None:
                    raise
                # The server was reached and had begun: a broken connection
                # now is an interrupted reply, not an unreachable service.
                logger.warning("stream of reply %s broke: %r", self.reply.pk, exc)
                self._handle(self.parser.close())
                self._finish(Message.Status.INCOMPLETE)
                return
            logger.debug("stream of reply %s cut: %r", self.reply.pk, exc)

        if guard.reason == "stopped":
            # Whatever was already read but not yet shown is dropped: the
            # user asked for the reply to end where they saw it end.
            self._finish(Message.Status.STOPPED)
        elif guard.reason:
            self._finish(Message.Status.ERROR, guard.reason, "")
        else:
            self._handle(self.parser.close())
            self._finish(self.parser.status)

    def _handle(self, events):
        for event in events:
            if event.kind == "reasoning":
                self._note_first("reasoning")
                self.publisher.publish("reasoning", text=event.text)
            elif event.kind == "answer":
                self._note_first("answer")
                self.publisher.publish("answer", text=event.text)
            elif event.kind == "reclassify":
                # What looked like the answer's start was the reasoning's.
                self.first_reasoning_at = self.first_answer_at
                self.first_answer_at = None
                self._store_reasoning_start(self.first_answer_wall)
                self.publisher.publish("reclassify")
        self._maybe_render()
        self._maybe_save()

    def _note_first(self, kind):
        now = time.monotonic()
        if kind == "reasoning" and self.first_reasoning_at is None:
            self.first_reasoning_at = now
            self._store_reasoning_start(timezone.now())
        if kind == "answer" and self.first_answer_at is None:
            self.first_answer_at = now
            self.first_answer_wall = timezone.now()

    def _store_reasoning_start(self, moment):
        # Written at once, not with the next save of the text: a page loaded
        # in between would start its timer from its own load.
        self.reply.reasoning_started_at = moment
        Message.objects.filter(pk=self.reply.pk).update(reasoning_started_at=moment)

    def _maybe_render(self):
        now = time.monotonic()
        answer = self.parser.answer
        if len(answer) == self.rendered_chars:
            return
        if now - self.last_rendered < self.render_interval:
            return

        html = render_markdown(answer)
        self.last_rendered = time.monotonic()
        self.rendered_chars = len(answer)
        # Rendering grows with the answer (tens of milliseconds at 20k
        # characters); spacing renders by their cost keeps a long answer from
        # spending most of the worker's time on HTML that is soon replaced.
        cost = self.last_rendered - now
        self.render_interval = max(settings.STREAM_RENDER_INTERVAL, 4 * cost)
        self.publisher.publish_live("render", html=html, chars=len(answer))

    def _maybe_save(self):
        now = time.monotonic()
        if now - self.last_saved < settings.STREAM_SAVE_INTERVAL:
            return

        self.last_saved = now
        Message.objects.filter(pk=self.reply.pk).update(
            content=self.parser.answer,
            reasoning=self.parser.reasoning,
            last_seq=self.publisher.seq,
        )

    def _finish_too_long(self):
        # The figures go into the translated message, not an English detail.
        params = {
            "estimate": self.reply.prompt_estimate,
            "model": self.profile.label,
            "limit": self.profile.input_limit,
        }
        self._finish(Message.Status.ERROR, "input_too_long", params=params)

    def _fail(self, exc):
        code, detail = failures.classify(exc)
        if code == "internal":
            logger.exception("reply %s failed", self.reply.pk)
        else:
            logger.warning("reply %s failed: %s %s", self.reply.pk, code, detail)
        self._finish(Message.Status.ERROR, code, detail)

    def _finish(self, status, error_code="", error_detail="", params=None):
        # The model has said all it will: the slot goes to the next reply in
        # the queue now, not after the saving and rendering below, which
        # would keep a GPU idle for as long as they take.
        if self.lease is not None:
            self.lease.release()

        reply = self.reply
        parser = self.parser
        if parser is not None and parser.error is not None and not error_code:
            error_code, error_detail = "in_band", parser.error.message

        reply.status = status or ReplyStatus.REASON_UNKNOWN
        reply.error_code = error_code
        reply.error_detail = error_detail[:2000]
        reply.error_params = params or {}
        if parser is not None:
            reply.content = parser.answer
            reply.reasoning = parser.reasoning
            self._store_usage(parser.usage)
            self._check_truncated_input()
        self._store_timings()
        reply.last_seq = self.publisher.seq + 1
        reply.save()
        Conversation.objects.filter(pk=reply.conversation_id).update(
            updated=timezone.now()
        )

        self.publisher.publish("end", **self._end_fields())
        self._record_usage()

    def _store_usage(self, usage):
        if usage is None:
            return
        self.reply.prompt_tokens = usage.prompt_tokens
        self.reply.completion_tokens = usage.completion_tokens
        self.reply.reasoning_tokens = usage.reasoning_tokens

    def _check_truncated_input(self):
        """Warn when the server read far less of the prompt than was sent.

        Ollama silently drops the head of a prompt longer than its num_ctx;
        the only trace is a prompt token count well below what was sent.
        """
        reported = self.reply.prompt_tokens
        estimate = self.reply.prompt_estimate
        if reported is None or not estimate:
            return
        if reported < TRUNCATION_RATIO * estimate and estimate - reported > 256:
            logger.warning(
                "reply %s: server counted %s prompt tokens, about %s were sent",
                self.reply.pk,
                reported,
                estimate,
            )
            self.reply.warning_code = "input_truncated"

    def _store_timings(self):
        if self.started is None:
            return
        now = time.monotonic()
        first_token = min(
            (t for t in (self.first_reasoning_at, self.first_answer_at) if t),
            default=None,
        )
        self.reply.duration_ms = _ms(now - self.started)
        if first_token is not None:
            self.reply.first_token_ms = _ms(first_token - self.started)
        if self.first_reasoning_at is not None:
            thought_until = self.first_answer_at or now
            self.reply.reasoning_ms = _ms(thought_until - self.first_reasoning_at)

    def _end_fields(self):
        reply = self.reply
        return {
            "status": reply.status,
            "warning_code": reply.warning_code,
            "can_extend": can_extend(reply, self.profile),
            "error_code": reply.error_code,
            "error_detail": reply.error_detail,
            "error_params": reply.error_params,
            "html": render_markdown(reply.content),
            "reasoning_ms": reply.reasoning_ms,
            "first_token_ms": reply.first_token_ms,
            "duration_ms": reply.duration_ms,
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "reasoning_tokens": reply.reasoning_tokens,
            },
        }

    def _record_usage(self):
        reply = self.reply
        began = self.first_reasoning_at or self.first_answer_at
        received = reply.reasoning + reply.content
        metering.record_request(
            user=reply.conversation.user_id,
            kind=UsageRecord.Kind.CHAT,
            model=reply.model,
            end_state=reply.status,
            error_code=reply.error_code,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            reasoning_tokens=reply.reasoning_tokens,
            # Only a prompt the model started answering was surely read.
            estimated_prompt_tokens=reply.prompt_estimate if began else None,
            estimated_output_tokens=count_text_tokens(received),
            queue_ms=reply.queue_ms,
            first_token_ms=reply.first_token_ms,
            duration_ms=reply.duration_ms,
        )


def _ms(seconds):
    return max(0, int(seconds * 1000))
