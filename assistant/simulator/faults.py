"""Failures the simulator can act out, chosen per request with `fault=NAME`.

Each one copies what a real server was seen to send, so the app's handling
is exercised over real HTTP exactly as in production:

    http400_context    400 with vLLM's context-overflow message and numbers
    http401            401 invalid API key (OpenAI's body)
    http429            429 rate limit, with Retry-After
    http500            500 internal error (vLLM's body)
    http503            503 overloaded, with Retry-After
    inband_error       a third of the reply, then vLLM's {"error": {...}} chunk
    openrouter_error   a third of the reply, then a chunk whose choice has
                       finish_reason "error" and whose body has an error object
    cut                a third of the reply, then the connection is dropped with
                       neither a finish reason nor [DONE]
    keepalive_only     keep-alive comments and nothing else, until the client
                       leaves (at most ten minutes)
    finish_empty       finish_reason "" on every chunk, then [DONE]
    finish_missing     no finish_reason key at all, then [DONE]
    length_reasoning   half the reasoning, then finish_reason "length"
    no_answer          the whole reasoning, then finish_reason "stop", no answer

An HTTP fault answers every request that asks for it, unless `fails=N` is
given too: then only the first N requests with the same messages fail and
the next one is answered, which is how a busy server that frees up behaves.
`retry_after=SECONDS` sets the Retry-After of http429 and http503.

A slow first byte needs no fault: `first=SECONDS` delays the first chunk and
sends keep-alives meanwhile.
"""

import socket

HTTP_FAULTS = {"http400_context", "http401", "http429", "http500", "http503"}
STREAM_FAULTS = {
    "inband_error",
    "openrouter_error",
    "cut",
    "keepalive_only",
    "finish_empty",
    "finish_missing",
    "length_reasoning",
    "no_answer",
}
FAULTS = HTTP_FAULTS | STREAM_FAULTS

RETRY_AFTER_SECONDS = 7
KEEPALIVE_ONLY_SECONDS = 600


def http_error(fault, prompt_tokens, error_class, retry_after=None):
    """The error a server answers with, for an HTTP fault."""
    if retry_after is None:
        retry_after = RETRY_AFTER_SECONDS
    if fault == "http400_context":
        context = 16384
        requested = prompt_tokens + context
        message = (
            f"This model's maximum context length is {context} tokens. However, "
            f"you requested {requested} tokens ({prompt_tokens} in the "
            f"messages, {context} in the completion). Please reduce the length "
            "of the messages or completion."
        )
        return error_class(400, message, "BadRequestError")
    if fault == "http401":
        return error_class(
            401,
            "Incorrect API key provided. You can find your API key in your "
            "account settings.",
            "invalid_request_error",
            code="invalid_api_key",
        )
    if fault == "http429":
        error = error_class(
            429,
            f"Rate limit reached for requests. Please try again in {retry_after}s.",
            "rate_limit_error",
            code="rate_limit_exceeded",
        )
        error.headers = {"Retry-After": str(retry_after)}
        return error
    if fault == "http500":
        return error_class(500, "Internal server error", "InternalServerError")
    error = error_class(
        503,
        "The engine is overloaded: too many requests in the queue.",
        "ServiceUnavailableError",
    )
    error.headers = {"Retry-After": str(retry_after)}
    return error


def stream_with_fault(handler, chat, reply, envelope):
    """Stream `reply` the way `chat.settings.fault` says a server breaks."""
    fault = chat.settings.fault
    pieces = reply.pieces
    send = _Sender(handler, chat, envelope)

    if fault == "keepalive_only":
        handler._pause(KEEPALIVE_ONLY_SECONDS)
        return

    if fault in ("inband_error", "openrouter_error", "cut"):
        send.pieces(pieces[: max(1, len(pieces) // 3)])
        _break_off(handler, fault, envelope)
        return

    if fault in ("finish_empty", "finish_missing"):
        send.pieces(pieces, finish_reason="" if fault == "finish_empty" else None)
        send.done()
        return

    reasoning = [piece for piece in pieces if piece.is_reasoning]
    if fault == "length_reasoning":
        send.pieces(reasoning[: max(1, len(reasoning) // 2)], last_finish="length")
    else:  # no_answer
        send.pieces(reasoning, last_finish="stop")
    send.done()


class _Sender:
    def __init__(self, handler, chat, envelope):
        self.handler = handler
        self.chat = chat
        self.envelope = envelope

    def pieces(self, pieces, finish_reason=None, last_finish=None):
        for index, piece in enumerate(pieces):
            if index:
                self.handler._pause(self.chat.settings.delay)
            chunk = self.envelope.chunk({piece.field: piece.text}, finish_reason)
            if finish_reason is None and last_finish is None:
                # finish_missing: some relays leave the key out entirely.
                del chunk["choices"][0]["finish_reason"]
            if last_finish and index == len(pieces) - 1:
                chunk["choices"][0]["finish_reason"] = last_finish
            self.handler._send_event(chunk)

    def done(self):
        self.handler._write_chunk(b"data: [DONE]\n\n")
        self.handler._end_chunks()


def _break_off(handler, fault, envelope):
    if fault == "inband_error":
        # vLLM sends the error as a data chunk of its own, then [DONE].
        handler._send_event(
            {
                "error": {
                    "object": "error",
                    "message": "CUDA error: an illegal memory access was encountered",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            }
        )
        handler._write_chunk(b"data: [DONE]\n\n")
        handler._end_chunks()
        return

    if fault == "openrouter_error":
        chunk = envelope.chunk({"content": ""}, "error")
        chunk["choices"][0]["native_finish_reason"] = "error"
        chunk["error"] = {"code": 502, "message": "Provider returned error"}
        handler._send_event(chunk)
        handler._write_chunk(b"data: [DONE]\n\n")
        handler._end_chunks()
        return

    # cut: the process died mid-reply; no last chunk of the chunked body.
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
