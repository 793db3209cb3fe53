"""How fast a large model server answers as requests pile up, for capacity mode.

Fitted to what the seed deployment measured of DeepSeek-R1 671B on two 8-GPU
hosts: 64 tokens a second in all at 4 concurrent 2k-token prompts, 122.7 at
16; at 32 most replies took over a minute, at 4 concurrent 4k prompts three
of four did, and at 8k prompts or 64 users nothing came back at all. The
model has three parts:

- the total output rate grows with the requests being generated but levels
  off (PEAK_TOKENS_PER_SECOND * n / (n + HALF_PEAK_CONCURRENCY)), and the
  requests share it, so each one slows as more run;
- a prompt longer than REFERENCE_PROMPT_TOKENS slows its own reply in
  proportion to its length;
- stalls, in which a request gets no tokens at all: prompts of
  LONG_PROMPT_TOKENS or more are generated one at a time, the oldest first;
  prompts over OVERSIZE_PROMPT_TOKENS only run alone; and once the prompts
  in flight exceed KV_CACHE_TOKENS, the server keeps evicting and
  recomputing them and every request stalls.

With replies of about 500 tokens this gives the table: 16 and 7.7 tokens a
second per request at 4 and 16 concurrent 2k prompts, under 5 at 32 (so a
reply takes well over a minute), the 4k prompts finishing one by one about
45 s apart, and no token at all at 8k x 4 or 64 x 2k.
"""

import threading
import time
from contextlib import contextmanager

PEAK_TOKENS_PER_SECOND = 176.7
HALF_PEAK_CONCURRENCY = 7.04
REFERENCE_PROMPT_TOKENS = 2048
LONG_PROMPT_TOKENS = 3072
# The seed's operators capped input at 6144 tokens after the 8k row failed.
OVERSIZE_PROMPT_TOKENS = 6144
KV_CACHE_TOKENS = 98304


def total_tokens_per_second(generating):
    """Output of the whole server while `generating` requests make progress."""
    if generating <= 0:
        return 0.0
    return PEAK_TOKENS_PER_SECOND * generating / (generating + HALF_PEAK_CONCURRENCY)


def is_stalled(prompt_sizes):
    """For each active request, in the order they started: does it stall?"""
    if sum(prompt_sizes) > KV_CACHE_TOKENS:
        return [True] * len(prompt_sizes)

    alone = len(prompt_sizes) == 1
    stalled = []
    long_running = False
    for size in prompt_sizes:
        if size > OVERSIZE_PROMPT_TOKENS:
            stalled.append(not alone)
        elif size >= LONG_PROMPT_TOKENS:
            stalled.append(long_running)
            long_running = True
        else:
            stalled.append(False)
    return stalled


def token_intervals(prompt_sizes):
    """Seconds between two tokens of each active request; None while stalled.

    prompt_sizes: the prompt tokens of the requests being served, oldest
    first.
    """
    stalled = is_stalled(prompt_sizes)
    generating = stalled.count(False)
    if not generating:
        return [None] * len(prompt_sizes)

    shared_interval = generating / total_tokens_per_second(generating)
    return [
        None if stops else shared_interval * max(1.0, size / REFERENCE_PROMPT_TOKENS)
        for size, stops in zip(prompt_sizes, stalled)
    ]


class ActiveRequest:
    def __init__(self, tracker, prompt_tokens):
        self.tracker = tracker
        self.prompt_tokens = prompt_tokens
        # When the server's pacing last let a token out (time.monotonic()).
        self.last_token_due = time.monotonic()

    def token_interval(self):
        return self.tracker.interval_of(self)


class CapacityTracker:
    """The requests a simulator is serving, oldest first, across its threads."""

    def __init__(self):
        self._active = []
        self._lock = threading.Lock()

    @contextmanager
    def serving(self, prompt_tokens):
        request = ActiveRequest(self, prompt_tokens)
        with self._lock:
            self._active.append(request)
        try:
            yield request
        finally:
            with self._lock:
                self._active.remove(request)

    def interval_of(self, request):
        with self._lock:
            sizes = [active.prompt_tokens for active in self._active]
            index = self._active.index(request)
        return token_intervals(sizes)[index]
