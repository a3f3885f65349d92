"""Live and replayed tickwire feeds as async iterators.

Live: `Client` holds a WebSocket (`websockets`) to `/ws` in the binary
subprotocol, subscribes, and yields every message decoded; it reconnects
with backoff and subscribes again, and yields a `Gap` where a symbol's
sequence jumps (`explained` when a `conflated` notice or a throttle says
why). Replay: `replay()` streams `/replay.ndjson` (plain HTTP/1.1 over
asyncio, no other dependency) and yields every update of the window, in
order; `replay_dataframe()` collects quotes and trades into pandas.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import quote, urlsplit

import websockets

from .decode import Control, Decoder, Message, Quote, Symbol, Trade


@dataclass(frozen=True)
class Gap:
    """A symbol's sequence jumped from `after` to `got`."""

    symbol: str
    after: int
    got: int
    explained: bool
    type: str = "gap"


class Client:
    """A live subscription that survives reconnects.

    >>> async for msg in Client("ws://127.0.0.1:8080/ws", ["BTCUSDT"]):
    ...     print(msg)
    """

    def __init__(
        self,
        url: str,
        symbols: Iterable[str] = ("*",),
        channels: Optional[List[str]] = None,
        throttle_ms: Optional[int] = None,
        initial_backoff: float = 0.25,
        max_backoff: float = 5.0,
    ) -> None:
        self.url = url
        self.symbols = list(symbols)
        self.channels = channels
        self.throttle_ms = throttle_ms
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.reconnects = 0
        self._stopped = False

    def close(self) -> None:
        """Ends the iteration after the message being handled."""
        self._stopped = True

    async def __aiter__(self) -> AsyncIterator[Union[Message, Gap]]:
        backoff = self.initial_backoff
        # The last symbol_seq of each symbol, by name (ids are a
        # connection's own; symbol_seq is the origin's, the same on every
        # node): kept across reconnects, so that what a reconnect missed
        # shows as a gap.
        by_name: Dict[str, int] = {}
        while not self._stopped:
            try:
                async with websockets.connect(
                    self.url, subprotocols=["tickwire.v1"], max_size=None
                ) as ws:
                    backoff = self.initial_backoff
                    request: Dict[str, Any] = {"op": "subscribe", "symbols": self.symbols}
                    if self.channels is not None:
                        request["channels"] = self.channels
                    if self.throttle_ms:
                        request["throttle_ms"] = self.throttle_ms
                    await ws.send(json.dumps(request))
                    decoder = Decoder()
                    explained = 0
                    async for data in ws:
                        msg = decoder.decode(data)
                        if isinstance(msg, Control) and msg.type == "conflated":
                            explained = 1
                        seq = getattr(msg, "symbol_seq", None)
                        if isinstance(msg, (Quote, Trade)) and seq is not None:
                            before = by_name.get(msg.symbol)
                            if before is not None and seq > before + 1:
                                yield Gap(msg.symbol, before, seq,
                                          bool(explained) or bool(self.throttle_ms))
                            by_name[msg.symbol] = max(seq, before or 0)
                        yield msg
                        if self._stopped:
                            return
            except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake):
                if self._stopped:
                    return
            self.reconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff)


async def _get(base: str, path: str) -> Tuple[int, asyncio.StreamReader, asyncio.StreamWriter, bool]:
    """Sends a GET; returns the status, the stream after the head, and
    whether the body is chunked."""
    u = urlsplit(base)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head.split(" ", 2)[1])
    return status, reader, writer, "transfer-encoding: chunked" in head


async def _body_lines(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The body's lines, as the server sends them."""
    rest = b""

    async def chunks() -> AsyncIterator[bytes]:
        if not chunked:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    return
                yield data
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    async for data in chunks():
        rest += data
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line:
                yield line
    if rest:
        yield rest


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


async def recordings(base: str = "http://127.0.0.1:8080") -> List[Dict[str, Any]]:
    """The server's recordings (`GET /recordings`)."""
    status, reader, writer, chunked = await _get(base, "/recordings")
    try:
        body = b"".join([line async for line in _body_lines(reader, chunked)])
    finally:
        writer.close()
    if status != 200:
        raise HttpError(status, body.decode(errors="replace").strip())
    return json.loads(body)["recordings"]


def _replay_path(recording: str, symbols: Optional[Iterable[str]], start: Any, end: Any,
                 speed: Union[str, float], channels: Optional[Iterable[str]]) -> str:
    q = [f"recording={quote(recording, safe='')}", f"speed={speed}"]
    if symbols:
        q.append("symbols=" + quote(",".join(symbols), safe=","))
    for key, t in (("from", start), ("to", end)):
        if t is not None:
            q.append(f"{key}={quote(str(t), safe='')}")
    if channels:
        q.append("channels=" + ",".join(channels))
    return "/replay.ndjson?" + "&".join(q)


async def replay(
    recording: str,
    base: str = "http://127.0.0.1:8080",
    symbols: Optional[Iterable[str]] = None,
    start: Any = None,
    end: Any = None,
    speed: Union[str, float] = "max",
    channels: Optional[Iterable[str]] = None,
) -> AsyncIterator[Message]:
    """Every message of a replay session, in order: definitions, then each
    update of `symbols` recorded in [`start`, `end`) (RFC 3339 strings or
    ns). Never conflated: the server waits for this iterator."""
    path = _replay_path(recording, symbols, start, end, speed, channels)
    status, reader, writer, chunked = await _get(base, path)
    try:
        if status != 200:
            body = b"".join([line async for line in _body_lines(reader, chunked)])
            raise HttpError(status, body.decode(errors="replace").strip())
        decoder = Decoder()
        async for line in _body_lines(reader, chunked):
            yield decoder.decode_json(line.decode("utf-8"))
    finally:
        writer.close()


async def replay_dataframe(recording: str, **kwargs: Any) -> "Any":
    """A replay's quotes and trades as a pandas DataFrame (pandas needed):
    one row each, prices and sizes as `Decimal`."""
    import pandas as pd  # optional dependency

    rows = []
    async for m in replay(recording, **kwargs):
        if isinstance(m, (Quote, Trade)):
            row = {k: v for k, v in m.__dict__.items()}
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["Client", "Gap", "HttpError", "recordings", "replay", "replay_dataframe", "Symbol"]
