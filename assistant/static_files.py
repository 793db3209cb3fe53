"""WhiteNoise's static files, served from a middleware that can run async.

WhiteNoise (6.12) ships a sync-only middleware. Under ASGI one sync-only
middleware makes Django run the whole request in a thread, and an async
view below it then holds that thread for as long as it waits: a /v1
completion for its whole place in the model's queue. This subclass keeps
WhiteNoise's lookup and responses and only adds the async path.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, *args, **kwargs):
        super().__init__(get_response, *args, **kwargs)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        static_file = await self._find(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        # Opening the file touches the disk; a thread, not the event loop.
        return await sync_to_async(self.serve, thread_sensitive=False)(
            static_file, request
        )

    async def _find(self, path):
        if self.autorefresh:
            # Looked up on disk on every request (DEBUG): a thread too.
            return await sync_to_async(self.find_file, thread_sensitive=False)(path)
        return self.files.get(path)
