"""Other people's clients, one connection each: the thin I/O layer of the interop matrix.

Each session opens one connection the way a user of that library would, offers the resume
token the protocol defines, and yields the samples it receives (checked by
:func:`model.sample.decode_sample`) until the connection ends; it raises on any failure.
Reconnecting, the read deadline and the ledger are the reader's
(:mod:`experiments.interop.reader`), the same for every library.

- WebSocket: the ``websockets`` library's client, aiohttp's ``ws_connect``, both on
  ``/websocket/?epoch=E&since=SEQ``;
- SSE: ``httpx-sse`` and ``sseclient-py`` (over ``urllib3``, in a thread: it is synchronous),
  both sending ``Last-Event-ID: E:SEQ``, the id of the last event they received;
- polling: ``httpx`` loops ``GET /samples?epoch=E&since=SEQ`` (``&wait=S`` for long polling);
- TCP: a plain socket writes its hello line (``{}`` or ``{"epoch":E,"since":SEQ}``) and reads
  NDJSON, skipping ``{"heartbeat":NS}`` lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import aiohttp
import httpx
import sseclient
import urllib3
import websockets
from httpx_sse import aconnect_sse

from model.sample import Sample, decode_sample, decode_samples

__all__ = ["SESSIONS", "Session", "Token"]

#: The resume position a client sends back: (epoch, newest seq), or None the first time.
Token = tuple[str, int] | None
#: host, port, token, read timeout (s) -> the connection's samples.
Session = Callable[[str, int, Token, float], AsyncGenerator[Sample, None]]


def _ws_url(host: str, port: int, token: Token) -> str:
    query = "" if token is None else f"?epoch={token[0]}&since={token[1]}"
    return f"ws://{host}:{port}/websocket/{query}"


async def websockets_session(
    host: str, port: int, token: Token, timeout_s: float
) -> AsyncGenerator[Sample, None]:
    async with websockets.connect(_ws_url(host, port, token), open_timeout=timeout_s) as ws:
        async for message in ws:
            yield decode_sample(message)


async def aiohttp_session(
    host: str, port: int, token: Token, timeout_s: float
) -> AsyncGenerator[Sample, None]:
    timeout = aiohttp.ClientTimeout(sock_connect=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(_ws_url(host, port, token)) as ws,
    ):
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"websocket message of type {message.type.name}")
            yield decode_sample(message.data)


def _last_event_id(token: Token) -> dict[str, str]:
    return {} if token is None else {"Last-Event-ID": f"{token[0]}:{token[1]}"}


async def httpx_sse_session(
    host: str, port: int, token: Token, timeout_s: float
) -> AsyncGenerator[Sample, None]:
    url = f"http://{host}:{port}/events"
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) as client,
        aconnect_sse(client, "GET", url, headers=_last_event_id(token)) as source,
    ):
        source.response.raise_for_status()
        async for event in source.aiter_sse():
            if event.data:
                yield decode_sample(event.data)


@dataclass
class _Thread:
    """A synchronous client's connection in a thread, handing samples to the event loop."""

    queue: asyncio.Queue[Sample | BaseException | None]
    loop: asyncio.AbstractEventLoop
    response: urllib3.BaseHTTPResponse | None = None
    stopped: bool = False

    def put(self, item: Sample | BaseException | None) -> None:
        if not self.stopped:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


async def sseclient_session(
    host: str, port: int, token: Token, timeout_s: float
) -> AsyncGenerator[Sample, None]:
    url = f"http://{host}:{port}/events"
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(timeout_s, timeout_s))
    state = _Thread(asyncio.Queue(), asyncio.get_running_loop())

    def run() -> None:
        try:
            headers = {"Accept": "text/event-stream", **_last_event_id(token)}
            response = pool.request("GET", url, headers=headers, preload_content=False)
            state.response = response
            if response.status != 200:
                raise ConnectionError(f"HTTP {response.status}")
            for event in sseclient.SSEClient(response).events():
                if event.data:
                    state.put(decode_sample(event.data))
            state.put(None)
        except BaseException as exc:  # handed to the loop: the session raises it there
            state.put(exc)

    thread = threading.Thread(target=run, name="sseclient", daemon=True)
    thread.start()
    try:
        while True:
            item = await state.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        state.stopped = True
        if state.response is not None:
            with contextlib.suppress(Exception):
                state.response.shutdown()  # unblocks the thread's read


def _polling(long: bool) -> Session:
    async def session(
        host: str, port: int, token: Token, timeout_s: float
    ) -> AsyncGenerator[Sample, None]:
        url = f"http://{host}:{port}/samples"
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) as client:
            first = True
            while True:
                params: dict[str, str | int | float] = {}
                if token is not None:
                    params = {"epoch": token[0], "since": token[1]}
                if long and not first:
                    params["wait"] = 1.0
                response = await client.get(url, params=params)
                response.raise_for_status()
                batch = decode_samples(response.content)
                for sample in batch:
                    token = (sample.epoch, sample.seq)
                    yield sample
                first = False
                if not long and not batch:
                    await asyncio.sleep(0.05)

    return session


async def socket_session(
    host: str, port: int, token: Token, timeout_s: float
) -> AsyncGenerator[Sample, None]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        hello = {} if token is None else {"epoch": token[0], "since": token[1]}
        writer.write(json.dumps(hello).encode() + b"\n")
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("end of stream")
            if line.startswith(b'{"heartbeat"'):
                continue
            if line.startswith(b'{"error"'):
                raise ConnectionError(line.decode(errors="replace").strip())
            yield decode_sample(line)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


#: Family -> (client name, session).
SESSIONS: dict[str, tuple[tuple[str, Session], ...]] = {
    "websocket": (
        ("websockets (library)", websockets_session),
        ("aiohttp ws_connect", aiohttp_session),
    ),
    "sse": (("httpx-sse", httpx_sse_session), ("sseclient-py", sseclient_session)),
    "poll": (("httpx", _polling(False)),),
    "long-poll": (("httpx", _polling(True)),),
    "tcp": (("plain socket", socket_session),),
}
