"""gRPC: one server-streaming call per connection, grpcio's asyncio API on both sides.

Wire: ``transportbench.Stream/Subscribe(ResumeToken) returns (stream Sample)``
(``transports/proto/transportbench.proto``; messages and status codes in
:mod:`transports.grpc_wire`). The request is the resume token (the empty message: live
samples only); each response message is one sample. The response headers go out with the
first sample, or at once when none is waiting, so a client knows it is in either way.

Server: ``grpc.aio.server``, one handler per call. A pump task takes a few samples at a time
from the hub and writes them one message each, every ``write`` awaited: grpc has no batched
write, and its completion is the backpressure (grpc buffers up to the HTTP/2 window, then a
peer that reads nothing stops the writes). A refusal ends the call with a status whose details
are :mod:`transports.rejections`' text: RESOURCE_EXHAUSTED ``server full: ...`` at the
connection limit (the hub's: calls count, idle sockets do not), INVALID_ARGUMENT
``bad resume token: ...`` or ``protocol error: ...`` for a request that is not a valid
``ResumeToken``, RESOURCE_EXHAUSTED ``slow consumer: ...`` for a subscriber the hub cut (it
may resume), UNAVAILABLE ``server shutting down`` from ``stop()``. A status follows the write
still pending (grpc takes no other operation meanwhile): a peer that never reads its window
free never gets one, and ``stop()`` cancels such calls after a grace period. grpc itself
answers a request over ``max_message_bytes`` with RESOURCE_EXHAUSTED, an unknown method with
UNIMPLEMENTED, and bytes that are not HTTP/2 by closing the connection. Its metadata limits
(set to ``max_message_bytes`` too) it applies loosely: header blocks of 2-4 MiB were refused
only some of the time here.

Dead peers: HTTP/2 keepalive pings both ways, every ``heartbeat_s``; a ping unanswered for
``dead_after_s`` closes the connection (client: UNAVAILABLE, read as
:class:`~model.errors.PeerSilent`). The server accepts the clients' pings that often
(``grpc.http2.min_ping_interval_without_data_ms``) instead of answering GOAWAY
"too_many_pings". A connection that has not sent its HTTP/2 preface and SETTINGS within
``header_timeout_s`` is closed (grpc's handshake timeout).

Where grpcio cannot use the shared sockets (:mod:`transports.sockets`): it binds, listens and
accepts in its own C core, so

- it listens with the kernel's ``somaxconn`` (4096 here); the server calls ``listen()`` again
  on grpc's listening socket with the shared :data:`~transports.sockets.BACKLOG`, found by its
  port among the process's descriptors, so every transport still gets the same accept queue;
- accepted sockets are not tuned by :func:`~transports.sockets.tune_accepted`: grpc sets
  TCP_NODELAY itself, and its ``TCP_USER_TIMEOUT`` comes from the keepalive timeout
  (``dead_after_s``, as the shared helper sets it); the send buffer is the kernel's default
  (``send_buffer_bytes`` does not apply), the kernel's own TCP keepalive is off (the HTTP/2
  pings stand for it);
- ``SO_REUSEPORT`` is off (``grpc.so_reuseport`` 0), so a port in use is an error, not a
  second server sharing it;
- out of file descriptors, grpc's listener retries accept() once a second, logging a line
  each time ("File descriptor limit reached. Retrying.").

Client: ``grpc.aio.insecure_channel`` with its own connection (no subchannel shared with other
channels of the process), one call; entering :func:`connect` waits for the response headers
within ``connect_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path

import grpc
import grpc.aio

from model.errors import (
    ServerUnavailable,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample
from transports.contract import Features, Transport
from transports.grpc_wire import (
    METHOD,
    PATH,
    SERVICE,
    SHUTDOWN,
    Refusal,
    Request,
    channel_args,
    read_request,
    refusal,
    sample_message,
    sample_of,
    server_args,
    stream_error,
    token_message,
)
from transports.hub import Hub, Subscription
from transports.options import NoOptions, Options
from transports.proto import transportbench_pb2 as pb
from transports.resume import ResumeToken
from transports.settings import Settings
from transports.sockets import BACKLOG, listening_sockets, url_host
from transports.tls import client_context, server_context

__all__ = ["GRPC", "GrpcServer", "connect", "keepalive_params"]

_log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Request, pb.Sample]
Call = grpc.aio.UnaryStreamCall[pb.ResumeToken, pb.Sample]

#: Samples the pump takes from the hub at a time. The hub cuts a subscriber that lets more
#: than ``queue_size`` new samples pass between two takes, and grpc writes (and awaits) one
#: message per sample: a whole batch of 1,000 awaited writes between two takes would count as
#: falling behind at rates grpc keeps up with. (A connection that really is slower than the
#: rate still falls out of the history and is cut.)
_TAKE = 64
#: How long a stopping server lets its calls take their final status before cancelling them.
_STOP_GRACE_S = 1.0
#: Sessions grpc's client cache keeps (one per target it connected to).
_SESSION_CACHE_SIZE = 64


class _Subscriber:
    """One call's subscription and the one way it ends."""

    __slots__ = ("broken", "ended", "status", "writing")

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        #: The status the server ends the call with (None: the peer went, nobody to tell).
        self.status: Refusal | None = None
        #: A write is with grpc: the call takes no other operation until it completes.
        self.writing = False
        #: A write failed: the call is over, no status can follow.
        self.broken = False

    def end(self, status: Refusal | None = None) -> None:
        """Stop the stream (idempotent); synchronous, for the hub's overflow callback."""
        if not self.ended.is_set():
            self.status = status
            self.ended.set()


class GrpcServer:
    """A ``grpc.aio`` server publishing the hub's samples to every ``Subscribe`` call."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self._server: grpc.aio.Server | None = None
        self._subscribers: set[_Subscriber] = set()

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        server = grpc.aio.server(options=server_args(self.settings))
        handler = grpc.unary_stream_rpc_method_handler(
            self._subscribe,
            request_deserializer=read_request,
            response_serializer=pb.Sample.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        try:
            address = f"{url_host(self.host)}:{self._port}"
            tls = self.settings.tls
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                server_context(tls)  # one clear error for unusable files, as on every server
                key, cert = Path(tls.keyfile or ""), Path(tls.certfile or "")
                credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            await server.stop(None)
            raise _bind_error(self.host, self._port, exc) from exc
        await server.start()
        self._server, self._port = server, port
        set_backlog(port, BACKLOG)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        for subscriber in list(self._subscribers):
            subscriber.end(SHUTDOWN)
        # Calls still running after the grace (a peer that does not read their final status)
        # are cancelled: RST_STREAM, then the connections close.
        await server.stop(_STOP_GRACE_S)

    async def _subscribe(self, request: Request, context: Context) -> None:
        subscriber = _Subscriber()
        if request.error is not None:
            await context.abort(*refusal(request.error))
        try:
            subscription = self.hub.subscribe(
                request.token,
                on_overflow=lambda why: subscriber.end(refusal(SubscriberOverflow(why))),
            )
        except TooManyConnections as exc:
            await context.abort(*refusal(exc))
        self._subscribers.add(subscriber)
        pump = asyncio.create_task(self._pump(subscriber, subscription, context))
        try:
            await subscriber.ended.wait()
            self._subscribers.discard(subscriber)
            subscription.close()
            # grpc refuses a status while a write is pending (too many operations): let the
            # write finish (the pump stops after it); a pump waiting for samples just stops.
            if not subscriber.writing:
                pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        finally:
            # Cancelled (the peer cancelled the call, or the server stops): so is the pump.
            self._subscribers.discard(subscriber)
            subscription.close()
            pump.cancel()
        status = subscriber.status
        if status is not None and not subscriber.broken:
            if status is not SHUTDOWN:
                _log.info("ending a call from %s: %s", context.peer(), status[1])
            await context.abort(*status)

    async def _pump(
        self, subscriber: _Subscriber, subscription: Subscription, context: Context
    ) -> None:
        """Write the hub's samples, one awaited message per sample, taking at most
        :data:`_TAKE` at a time."""
        write = context.write
        try:
            # Taken before anything is awaited: a subscription resumed at the oldest sample
            # held would fall out of the history while the response headers went out.
            batch = subscription.take(_TAKE)
            subscriber.writing = True
            if not batch:
                # The response headers at once: the client is in before the first sample
                # (otherwise the first message carries them).
                await context.send_initial_metadata(())
            while True:
                for sample in batch:
                    await write(sample_message(sample))
                    if subscriber.ended.is_set():
                        return
                subscriber.writing = False
                batch = subscription.take(_TAKE) or await subscription.next_batch()
                subscriber.writing = True
        except SubscriberOverflow:
            pass  # the overflow callback has already ended the call, saying why
        except grpc.aio.BaseError:
            subscriber.broken = True  # the call is over (the peer went, or the server stops)
        finally:
            subscriber.writing = False
            subscriber.end()


def _bind_error(host: str, port: int, exc: RuntimeError) -> OSError:
    """The OSError behind grpc's "Failed to bind", found by binding the address ourselves."""
    try:
        for sock in listening_sockets(host, port):
            sock.close()
    except OSError as real:
        return real
    return OSError(errno.EADDRNOTAVAIL, f"grpc could not bind {host}:{port}: {exc}")


def set_backlog(port: int, backlog: int) -> int:
    """``listen(backlog)`` again on this process's listening TCP sockets bound to ``port``.

    grpc listens with ``somaxconn`` on a socket of its own; Linux lets ``listen()`` be called
    again on a listening socket to change its queue. Returns how many sockets were changed.
    """
    changed = 0
    with contextlib.suppress(FileNotFoundError):  # no /proc: grpc's backlog stays
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):
                if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    continue
                # A duplicate: listen() on it changes the one socket both descriptors name.
                with socket.socket(fileno=os.dup(fd)) as sock:
                    if (
                        sock.family in (socket.AF_INET, socket.AF_INET6)
                        and sock.type == socket.SOCK_STREAM
                        and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                        and sock.getsockname()[1] == port
                    ):
                        sock.listen(backlog)
                        changed += 1
    return changed


@contextlib.asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    target = f"{url_host(host)}:{port}"
    tls = settings.tls
    if tls is None:
        channel = grpc.aio.insecure_channel(target, options=channel_args(settings))
    else:
        client_context(tls)  # a CA file that cannot be used: one clear error first
        roots = Path(tls.cafile).read_bytes() if tls.cafile else None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        args: list[tuple[str, object]] = [*channel_args(settings)]
        if tls.resume_sessions:
            args.append(("grpc.ssl_session_cache", _session_cache()))
        channel = grpc.aio.secure_channel(target, credentials, options=args)
    try:
        subscribe = channel.unary_stream(
            PATH,
            request_serializer=pb.ResumeToken.SerializeToString,
            response_deserializer=pb.Sample.FromString,
        )
        call: Call = subscribe(token_message(token))
        try:
            try:
                async with asyncio.timeout(settings.connect_timeout_s):
                    await call.initial_metadata()
            except TimeoutError as exc:
                limit = settings.connect_timeout_s
                raise ServerUnavailable(
                    f"no answer from grpc://{target} within {limit:g} s"
                ) from exc
            if call.done():
                # No response headers: the call ended at once (refused, or nobody there).
                error = stream_error(await call.code(), await call.details(), connecting=True)
                raise type(error)(f"grpc://{target}: {error}")
            yield _samples(call)
        finally:
            # The call first: closing the channel under a running call logs it as cancelled.
            call.cancel()
    finally:
        await channel.close(None)


@functools.cache
def _session_cache() -> object:
    """grpcio's own TLS session cache, one per process: a channel given it offers the
    session of an earlier channel to the same server (``TlsSettings.resume_sessions``;
    Python's ``ssl`` contexts play no part in grpc's connections). grpc keys the cache by
    the SNI host name, which it sends only for a DNS name: a channel to an IP address
    (``127.0.0.1``, as the experiments connect) never resumes."""
    # grpc-stubs does not describe grpc.experimental.
    from grpc.experimental.session_cache import (  # type: ignore[import-not-found]
        ssl_session_cache_lru,
    )

    cache: object = ssl_session_cache_lru(_SESSION_CACHE_SIZE)
    return cache


async def _samples(call: Call) -> AsyncGenerator[Sample, None]:
    try:
        async for message in call:
            yield sample_of(message)
    except grpc.aio.AioRpcError as exc:
        raise stream_error(exc.code(), exc.details() or "", connecting=False) from exc


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """HTTP/2 keepalive pings both ways, and how long an unanswered one may wait."""
    heartbeat = settings.heartbeat_s or None
    return {
        "keepalive_time_s": heartbeat,
        "keepalive_timeout_s": settings.dead_after_s if heartbeat else None,
        "server_min_ping_interval_s": heartbeat / 2 if heartbeat else None,
    }


GRPC = Transport(
    name="grpc",
    summary="gRPC server streaming: grpcio asyncio server and channel, protobuf samples",
    default_port=8895,
    endpoint="grpc://{host}:{port}" + PATH,
    features=Features(
        resume=True, heartbeat=True, browser_native=False, bidirectional=True, push=True
    ),
    serve=GrpcServer,
    connect=connect,
    options=NoOptions(),
    dependencies=("grpcio", "protobuf"),
    modules=("transports.grpc_stream", "transports.grpc_wire"),
    baseline="grpc",
    bad_input_family="grpc",
    resume_token="request message ResumeToken{epoch, since}",
    write_path=(
        "a task per call: grpcio's asyncio API has only the awaited context.write(), one "
        "message at a time"
    ),
    keepalive="HTTP/2 keepalive pings both ways (grpc.keepalive_time_ms / _timeout_ms)",
    keepalive_params=keepalive_params,
)
