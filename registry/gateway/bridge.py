"""The dispatcher's stream, run in one producer thread and handed to the event loop.

One thread for the whole stream, not one hop per fragment: the model keeps generating while the
loop sends (a hop per fragment cost ~5 % of the decode rate), and every ``next()`` and the final
``close()`` happen in the same thread. Its own thread, never a worker of the loop's bounded thread
pool, which requests waiting in queues would exhaust. A client that hangs up stops it: a request
still queued gives its place back, one generating frees its instance after the fragment in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from fastapi import Request

from registry.errors import UnavailableError
from registry.providers import GenerationRequest
from registry.serving.dispatcher import Answer, Dispatcher
from registry.serving.router import Resolution

_DISCONNECT_POLL_S = 0.25


class StreamBridge:
    """``answer`` is set when the stream ends; an error is raised from :meth:`next` (the first
    call is still in time for a proper status code) or from :meth:`rest`.

    Example::

        bridge = StreamBridge(dispatcher, resolution, generation_request, api="ollama", arrived=stamp,
                              call_id=new_id())
        answer = await bridge.whole(request)             # or, streaming:
        first = await bridge.first(request)
        async for fragment in bridge.rest(): ...
    """

    def __init__(
        self, dispatcher: Dispatcher, resolution: Resolution, request: GenerationRequest, *, api: str,
        arrived: float, call_id: str,
    ) -> None:
        self._cancelled = threading.Event()  # the dispatcher is told too: a request still queued withdraws
        self._stream = dispatcher.stream(resolution, request, api=api, arrived=arrived, cancelled=self._cancelled,
                                         call_id=call_id)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.answer: Answer | None = None
        threading.Thread(target=self._produce, name="arbiter-stream", daemon=True).start()

    async def next(self) -> str | None:
        """The next fragment; None at the end."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def rest(self) -> AsyncIterator[str]:
        while (fragment := await self.next()) is not None:
            yield fragment

    async def whole(self, request: Request) -> Answer:
        """Run the stream to its end (a whole answer), stopped if the client hangs up meanwhile."""
        async with self._stopped_if_gone(request):
            while await self.next() is not None:
                pass
        assert self.answer is not None
        return self.answer

    async def first(self, request: Request) -> str | None:
        """The first fragment (or the first error, in time for a proper status code); a client
        that hangs up while its request is still queued gives its place back."""
        async with self._stopped_if_gone(request):
            return await self.next()

    @contextlib.asynccontextmanager
    async def _stopped_if_gone(self, request: Request) -> AsyncIterator[None]:
        """While the block runs, a client that hangs up stops the stream (checked every 0.25 s):
        before a response has begun nothing else would notice."""

        async def watch() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(_DISCONNECT_POLL_S)
            self.close()

        watcher = asyncio.create_task(watch())
        try:
            yield
        finally:
            watcher.cancel()

    def close(self) -> None:
        """Stop generating (a client that hung up): the producer closes the stream after the
        fragment in progress, which frees its instance."""
        self._cancelled.set()

    def _produce(self) -> None:
        try:
            while not self._cancelled.is_set():
                try:
                    fragment = next(self._stream)
                except StopIteration as done:
                    self.answer = done.value
                    self._put(None)
                    return
                self._put(fragment)
            self._put(UnavailableError("the client disconnected; generation stopped"))
        except BaseException as exc:  # noqa: BLE001 — handed to the response, which reports it
            self._put(exc)
        finally:
            self._stream.close()

    def _put(self, item: str | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is shutting down
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
