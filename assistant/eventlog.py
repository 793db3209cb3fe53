"""The numbered events of each streaming reply, kept for late readers.

A browser that reloads, sleeps or joins from another tab reads the events of
a reply still being written from here, then follows the live ones, and uses
the sequence numbers to drop what it already has. Redis holds the log in
production, so any Daphne process can serve any browser; the embedded default
keeps it in memory, since its worker shares the web server's process.
"""

import json
import threading
import time

from django.conf import settings

# A reply's log outlives the reply by this long; the message row in the
# database is the record after that.
LOG_TTL_SECONDS = 3600


class MemoryEventLog:
    def __init__(self):
        self._logs = {}
        self._lock = threading.Lock()

    def append(self, stream_id, event):
        self.extend(stream_id, [event])

    def extend(self, stream_id, new_events):
        now = time.monotonic()
        with self._lock:
            self._drop_expired(now)
            events, _expiry = self._logs.get(stream_id, ([], 0))
            events.extend(new_events)
            self._logs[stream_id] = (events, now + LOG_TTL_SECONDS)

    def read(self, stream_id):
        with self._lock:
            events, _expiry = self._logs.get(stream_id, ([], 0))
            return list(events)

    def _drop_expired(self, now):
        expired = [key for key, (_events, expiry) in self._logs.items() if expiry < now]
        for key in expired:
            del self._logs[key]


class RedisEventLog:
    def __init__(self, url):
        import redis

        self._redis = redis.Redis.from_url(url)

    def append(self, stream_id, event):
        self.extend(stream_id, [event])

    def extend(self, stream_id, events):
        key = self._key(stream_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(key, *(json.dumps(event, ensure_ascii=False) for event in events))
        pipe.expire(key, LOG_TTL_SECONDS)
        pipe.execute()

    def read(self, stream_id):
        raw_events = self._redis.lrange(self._key(stream_id), 0, -1)
        return [json.loads(raw) for raw in raw_events]

    def _key(self, stream_id):
        return f"{settings.CACHE_PREFIX_EVENTS}:{stream_id}"


_log = None
_log_lock = threading.Lock()


def get_event_log():
    global _log
    with _log_lock:
        if _log is None:
            if settings.REDIS_URL:
                _log = RedisEventLog(settings.REDIS_URL)
            else:
                _log = MemoryEventLog()
        return _log
