"""One participant's channel: the protocol's exchanges as frames over one WebSocket.

The endpoint (:mod:`coordinator.transport._endpoint`) sends an exchange over the
channel when one is open, and over HTTP otherwise; an answer arrives as the HTTP
response would (:class:`FrameResponse`: a status, a content type, the body or its
NDJSON lines), so everything above the wire is the same either way.

- Negotiated: the channel is asked for (a signed handshake, see
  :mod:`twopc_core.channel`) at start and again after it closes; a participant that
  refuses it (no such path, another protocol, a refused signature) is spoken to over
  HTTP, and asked again only after :data:`REFUSED_RETRY` seconds.
- A channel that closes or breaks fails the exchanges in flight on it, as a dropped
  connection fails an HTTP exchange, so the callers' rules (a ``no`` vote, phase 2
  retried) are unchanged; the calls after it go over HTTP until the channel is open again.
- Each exchange keeps its own deadline; the channel has a heartbeat, so a peer that
  vanished without closing is found out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

import aiohttp
import structlog

from coordinator.config import ParticipantSettings
from twopc_core.channel import (
    CHANNEL_PATH,
    SUBPROTOCOL,
    Answer,
    FrameError,
    decode_answer,
    encode_request,
    handshake_headers,
)

__all__ = ["REFUSED_RETRY", "Channel", "ChannelClosed", "FrameResponse"]

log = structlog.get_logger(__name__)

#: Seconds before a participant that refused the channel is asked again.
REFUSED_RETRY = 60.0
#: Seconds before the channel is asked for again after it closed, or after a handshake
#: got no answer; doubled at each attempt that fails, up to :data:`UNREACHABLE_RETRY_CAP`.
UNREACHABLE_RETRY = 0.5
UNREACHABLE_RETRY_CAP = 10.0
#: Seconds between pings; a pong missing for half of it closes the channel.
HEARTBEAT = 30.0
#: The longest a handshake may take.
HANDSHAKE_TIMEOUT = 5.0


class ChannelClosed(Exception):
    """The channel closed (or broke) before the exchange's answer was complete."""


class FrameResponse:
    """An exchange's answer as its frames arrive: what the endpoint reads of an HTTP response."""

    def __init__(self) -> None:
        self._frames: deque[Answer] = deque()
        self._failure: ChannelClosed | None = None
        self._arrived: asyncio.Future[None] | None = None
        self.status = 0
        self.content_type = ""

    def feed(self, answer: Answer) -> None:
        self._frames.append(answer)
        self._wake()

    def fail(self, failure: ChannelClosed) -> None:
        self._failure = failure
        self._wake()

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def _next(self) -> Answer:
        while not self._frames:
            if self._failure is not None:
                raise self._failure
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        return self._frames.popleft()

    async def start(self) -> None:
        """Wait for the answer's first frame: its status and content type."""
        first = await self._next()
        self.status, self.content_type = first.status, first.content_type
        self._frames.appendleft(first)

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([part async for part in self._parts()])

    @property
    def content(self) -> AsyncIterator[bytes]:
        """The body's lines, as they arrive (an NDJSON batch answer)."""
        return self._lines()

    async def _parts(self) -> AsyncIterator[bytes]:
        while True:
            frame = await self._next()
            yield frame.body
            if frame.end:
                return

    async def _lines(self) -> AsyncIterator[bytes]:
        async for part in self._parts():
            for line in part.splitlines(keepends=True):
                yield line


class Channel:
    """The channel to one participant, opened on demand, reopened after it closes."""

    def __init__(self, settings: ParticipantSettings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._nonce = ""
        self._next_id = 0
        self._answers: dict[int, FrameResponse] = {}
        self._opening: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        #: Not asked for again before this (``time.monotonic``).
        self._retry_at = 0.0
        self._retry_delay = UNREACHABLE_RETRY
        #: The next attempt after a failed one, set on the event loop.
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        #: Channels opened since start, for operators and tests.
        self.opened = 0

    @property
    def open(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def ensure(self) -> None:
        """Ask for the channel, unless it is open, being asked for, or refused lately."""
        if self._closed or self.open or self._opening is not None or time.monotonic() < self._retry_at:
            return
        self._opening = asyncio.create_task(self._open(), name=f"channel:{self._settings.name}")

    def _try_again_later(self) -> None:
        """Ask for the channel again after a while (not while it is refused): the calls
        meanwhile go over HTTP."""
        delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, UNREACHABLE_RETRY_CAP)
        self._retry_at = time.monotonic() + delay
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry, self._retry_at = None, 0.0
        self.ensure()

    async def close(self) -> None:
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        for task in (self._opening, self._reader):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._opening, self._reader) if t is not None), return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        _fail_all(self._answers, ChannelClosed("the coordinator is shutting down"))

    @contextlib.asynccontextmanager
    async def request(
        self, operation: str, body: bytes, traceparent: str | None, accept: str
    ) -> AsyncIterator[FrameResponse]:
        """Send one exchange as a frame; yields its answer once its first frame arrived.
        Raises :class:`ChannelClosed` if the channel is not open or closes meanwhile."""
        ws, answers = self._ws, self._answers
        if ws is None or ws.closed:
            raise ChannelClosed("the channel is not open")
        frame_id = self._next_id
        self._next_id += 1
        response = FrameResponse()
        answers[frame_id] = response
        try:
            frame = encode_request(self._settings.secret, self._nonce, frame_id, operation, body, traceparent, accept)
            try:
                await ws.send_bytes(frame)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                raise ChannelClosed(f"the channel broke: {exc.__class__.__name__}") from None
            await response.start()
            yield response
        finally:
            answers.pop(frame_id, None)

    async def _open(self) -> None:
        url = f"{self._settings.url}/{CHANNEL_PATH}"
        nonce, headers = handshake_headers(self._settings.secret)
        try:
            ws = await self._session.ws_connect(
                url,
                headers=headers,
                protocols=(SUBPROTOCOL,),
                heartbeat=HEARTBEAT,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                autoping=True,
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            self._refused(f"answered the handshake with HTTP {exc.status}")
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._try_again_later()
            log.debug("participant channel not opened", participant=self._settings.name, error=repr(exc))
            return
        finally:
            self._opening = None
        if ws.protocol != SUBPROTOCOL:
            await ws.close()
            self._refused("did not choose the channel's subprotocol")
            return
        # Frame ids start again on each channel: its answers are awaited apart from the last one's.
        self._ws, self._nonce, self._next_id, self._answers = ws, nonce, 0, {}
        self.opened += 1
        self._retry_delay = UNREACHABLE_RETRY
        self._reader = asyncio.create_task(self._read(ws, self._answers), name=f"channel-reader:{self._settings.name}")
        log.debug("participant channel open", participant=self._settings.name)

    def _refused(self, why: str) -> None:
        self._retry_at = time.monotonic() + REFUSED_RETRY
        log.info("participant speaks plain HTTP only", participant=self._settings.name, why=why)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, answers: dict[int, FrameResponse]) -> None:
        reason = "the participant closed the channel"
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    reason = f"the participant sent a {message.type.name} message"
                    break
                try:
                    answer = decode_answer(message.data)
                except FrameError as exc:
                    reason = f"the participant sent a frame that is not the channel's: {exc}"
                    break
                response = answers.get(answer.frame_id)
                if response is not None:
                    response.feed(answer)
                    if answer.end:
                        del answers[answer.frame_id]
            else:
                if ws.close_code is not None and ws.close_code != 1000:
                    reason = f"the channel closed (code {ws.close_code})"
        except Exception as exc:  # a broken connection: whatever it was, the channel is gone
            reason = f"the channel broke: {exc.__class__.__name__}"
        finally:
            if self._ws is ws:
                self._ws = None
            _fail_all(answers, ChannelClosed(reason))
            await ws.close()
            if not self._closed:
                self._try_again_later()
                log.info("participant channel closed", participant=self._settings.name, reason=reason)


def _fail_all(answers: dict[int, FrameResponse], failure: ChannelClosed) -> None:
    for response in answers.values():
        response.fail(failure)
    answers.clear()
