"""A channel layer for the embedded default, safe to send to from threads.

Channels' InMemoryChannelLayer keeps asyncio queues that belong to the event
loop of the web server. The embedded Celery worker runs tasks in threads with
event loops of their own, and putting into those queues from another loop
neither is thread-safe nor wakes the waiting consumer. This layer hands every
send over to the loop that receives, which is where the queues live.
"""

import asyncio

from channels.layers import InMemoryChannelLayer


class EmbeddedChannelLayer(InMemoryChannelLayer):
    _home_loop = None

    async def receive(self, channel):
        self._home_loop = asyncio.get_running_loop()
        return await super().receive(channel)

    async def send(self, channel, message):
        await self._run_on_home_loop(super().send(channel, message))

    async def group_send(self, group, message):
        await self._run_on_home_loop(super().group_send(group, message))

    async def _run_on_home_loop(self, coroutine):
        home = self._home_loop
        current = asyncio.get_running_loop()
        if home is None or home is current or home.is_closed():
            return await coroutine

        future = asyncio.run_coroutine_threadsafe(coroutine, home)
        return await asyncio.wrap_future(future)
