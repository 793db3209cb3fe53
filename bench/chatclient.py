"""A signed-in chat client over HTTP and the websocket, as the page is.

Shared by the benchmarks and the deployment test: sign in through the
login form, open /ws/chat/ with the session cookie, ask a question and
follow its reply's numbered events, noting any number seen twice or
skipped.
"""

import asyncio
import http.cookiejar
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from websockets.asyncio.client import connect


class SignInError(Exception):
    """Signing in through the login form failed; the message says how."""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def log_in(base_url, username, password, tls=None):
    """Sign in as the login page's form does; return the Cookie header.

    tls: an ssl.SSLContext for an https:// base_url with its own CA.
    """
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=tls),
        urllib.request.HTTPCookieProcessor(jar),
        _NoRedirect,
    )
    login_url = f"{base_url}/accounts/login/"
    with opener.open(login_url, timeout=30) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if token is None:
        raise SignInError("the login page has no CSRF token")

    form = {
        "csrfmiddlewaretoken": token.group(1),
        "username": username,
        "password": password,
    }
    # A browser sends its origin with the form; over HTTPS Django's CSRF
    # check refuses a post with neither Origin nor Referer.
    post = urllib.request.Request(
        login_url,
        urllib.parse.urlencode(form).encode(),
        headers={"Origin": base_url},
    )
    try:
        opener.open(post, timeout=60)
    except urllib.error.HTTPError as error:
        # The redirect to the chat page that follows a successful sign-in.
        if error.code != 302:
            raise SignInError(f"signing in as {username}: HTTP {error.code}") from None

    cookies = {cookie.name: cookie.value for cookie in jar}
    if "sessionid" not in cookies:
        raise SignInError(f"could not sign in as {username}")
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def open_socket(base_url, cookie, timeout=30, tls=None):
    """An awaitable websocket to the app at base_url (http[s]://host:port)."""
    ws_url = "ws" + base_url.removeprefix("http") + "/ws/chat/"
    return connect(
        ws_url,
        origin=base_url,
        additional_headers={"Cookie": cookie},
        proxy=None,
        open_timeout=timeout,
        ssl=tls,
    )


@dataclass
class ReplyFollower:
    """The events of one reply as a page receives them, deduplicated by number.

    `duplicates` counts numbered events received twice (dropped, as the page
    drops them); `gaps` lists numbers that were skipped. `arrivals` holds
    the receive time of each answer or reasoning event.
    """

    reply_id: int | None = None
    conversation_id: int | None = None
    seq: int = 0
    answer: str = ""
    reasoning: str = ""
    status: str | None = None
    duplicates: int = 0
    gaps: list = field(default_factory=list)
    arrivals: list = field(default_factory=list)

    def take(self, message, received_at=None):
        """Feed one websocket message; True once the reply has ended."""
        received_at = time.monotonic() if received_at is None else received_at
        kind = message.get("type")
        if kind == "posted" and self.reply_id is None:
            self.reply_id = message["reply"]["id"]
            self.conversation_id = message["conversation"]["id"]
        elif kind == "snapshot" and message["message_id"] == self.reply_id:
            self._take_snapshot(message, received_at)
        elif kind == "replies":
            for event in message["events"]:
                if event["message_id"] == self.reply_id:
                    self._take_event(event, received_at)
        return self.status is not None

    def _take_snapshot(self, snapshot, received_at):
        stored = snapshot["message"]
        if stored["seq"] > self.seq:
            # The row holds everything up to its number: start from it.
            self.answer, self.reasoning = stored["content"], stored["reasoning"]
            self.seq = stored["seq"]
            if stored["status"] not in ("queued", "streaming"):
                self.status = stored["status"]
        for event in snapshot["events"]:
            self._take_event(event, received_at)

    def _take_event(self, event, received_at):
        if event["seq"] <= self.seq:
            # Live events carry the number of the last logged one.
            if event["kind"] in ("answer", "reasoning", "end"):
                self.duplicates += 1
            return
        if event["seq"] > self.seq + 1:
            self.gaps.append((self.seq + 1, event["seq"] - 1))
        self.seq = event["seq"]

        if event["kind"] == "answer":
            self.answer += event["text"]
            self.arrivals.append(received_at)
        elif event["kind"] == "reasoning":
            self.reasoning += event["text"]
            self.arrivals.append(received_at)
        elif event["kind"] == "reclassify":
            self.reasoning, self.answer = self.reasoning + self.answer, ""
        elif event["kind"] == "end":
            self.status = event["status"]


async def ask(ws, text, model, conversation_id=None):
    """Send a question; returns a ReplyFollower once the reply is posted."""
    follower = ReplyFollower()
    await ws.send(
        json.dumps(
            {
                "action": "send",
                "conversation_id": conversation_id,
                "text": text,
                "model": model,
                "client_token": "client",
            }
        )
    )
    while follower.reply_id is None:
        message = json.loads(await ws.recv())
        if message.get("type") == "refused":
            raise RuntimeError(f"the question was refused: {message['code']}")
        follower.take(message)
    return follower


async def watch(ws, follower):
    """Follow the follower's conversation on a (new) socket, as after a reload."""
    await ws.send(
        json.dumps(
            {
                "action": "watch",
                "conversation_id": follower.conversation_id,
                "open_replies": [follower.reply_id],
            }
        )
    )


async def follow(ws, follower, until=None):
    """Read messages into the follower until the reply ends or until(follower)."""
    while not follower.status:
        message = json.loads(await ws.recv())
        if follower.take(message):
            return follower
        if until is not None and until(follower):
            return follower
    return follower


async def follow_for(ws, follower, seconds, until=None):
    return await asyncio.wait_for(follow(ws, follower, until), seconds)
