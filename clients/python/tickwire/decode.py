"""The tickwire.v1 wire read back: binary messages (struct, little-endian)
and JSON messages into the same dataclasses, prices and sizes as
`decimal.Decimal` (never a float), timestamps as integer nanoseconds.

The layouts are docs/PROTOCOL.md's; a binary update needs its symbol's
definition (which always arrives first on a connection) for its decimals,
so a `Decoder` keeps the definitions it has read.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, List, Optional, Union

QUOTE, TRADE, SYMBOL, STATUS, BOOK, CANDLE, CANDLES = 1, 2, 3, 4, 5, 6, 7
SIDES = {0: "unknown", 1: "buy", 2: "sell"}
REASONS = {1: "gap", 2: "disconnected", 3: "silent", 4: "book_gap"}
INTERVALS = ["1s", "1m", "5m", "15m", "1h", "1d"]

_HEAD = struct.Struct("<BBHIQQQQQ")  # 48 bytes: type, byte1, flags, id, seq, symbol_seq, 3 ts


class DecodeError(ValueError):
    """A message that is not tickwire v1 as docs/PROTOCOL.md defines it."""


def fixed(mantissa: int, decimals: int) -> Decimal:
    """`mantissa × 10^-decimals`, exactly."""
    return Decimal(mantissa).scaleb(-decimals)


@dataclass(frozen=True)
class Symbol:
    id: int
    symbol: str
    price_decimals: int
    size_decimals: int
    type: str = "symbol"


@dataclass(frozen=True)
class Header:
    symbol: str
    id: int
    seq: int
    symbol_seq: int
    exchange_ts: int
    receive_ts: int
    publish_ts: int


@dataclass(frozen=True)
class Quote(Header):
    bid: Decimal = Decimal(0)
    bid_size: Optional[Decimal] = None
    ask: Decimal = Decimal(0)
    ask_size: Optional[Decimal] = None
    type: str = "quote"


@dataclass(frozen=True)
class Trade(Header):
    price: Decimal = Decimal(0)
    size: Decimal = Decimal(0)
    side: str = "unknown"
    type: str = "trade"


@dataclass(frozen=True)
class Status(Header):
    """A symbol turned stale (with a reason) or live again."""

    state: str = "live"
    reason: Optional[str] = None
    type: str = "status"


@dataclass(frozen=True)
class Book(Header):
    """`symbol_seq` is the book's `book_seq`. Levels are (price, size), best first."""

    channel: str = "book"
    snapshot: bool = True
    bids: List[tuple] = field(default_factory=list)
    asks: List[tuple] = field(default_factory=list)
    type: str = "book"


@dataclass(frozen=True)
class Bar:
    start_ts: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    closed: bool


@dataclass(frozen=True)
class Candles(Header):
    """A `candle` (one bar) or `candles` (several) message; `symbol_seq` is the `candle_seq`."""

    interval: str = "1m"
    snapshot: bool = False
    bars: List[Bar] = field(default_factory=list)
    type: str = "candle"


@dataclass(frozen=True)
class Control:
    """A reply or notice (`ack`, `error`, `conflated`, ...) as its JSON object."""

    body: Dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body.get("type"))


Message = Union[Symbol, Quote, Trade, Status, Book, Candles, Control]


class Decoder:
    """Decodes one connection's messages, keeping its symbol definitions."""

    def __init__(self) -> None:
        self.symbols: Dict[int, Symbol] = {}

    def decode(self, data: Union[bytes, str]) -> Message:
        if isinstance(data, str):
            return self.decode_json(data)
        return self.decode_binary(bytes(data))

    # -- binary ---------------------------------------------------------

    def decode_binary(self, p: bytes) -> Message:
        if not p:
            raise DecodeError("an empty binary message")
        kind = p[0]
        if kind == SYMBOL:
            if len(p) < 8 or len(p) != 8 + p[3]:
                raise DecodeError(f"symbol message of {len(p)} bytes")
            sym = Symbol(struct.unpack_from("<I", p, 4)[0], p[8:].decode("utf-8"), p[1], p[2])
            self.symbols[sym.id] = sym
            return sym
        want = {QUOTE: 80, TRADE: 64, STATUS: 48}.get(kind)
        if kind in (BOOK, CANDLE, CANDLES):
            want = None
        elif want is None:
            raise DecodeError(f"unknown binary message type {kind}")
        if len(p) < 48 or (want is not None and len(p) != want):
            raise DecodeError(f"a message of type {kind} has {len(p)} bytes")
        _, byte1, flags, sid, seq, sseq, ets, rts, pts = _HEAD.unpack_from(p)
        d = self.symbols.get(sid)
        if d is None:
            raise DecodeError(f"an update of symbol {sid} before its definition")
        h = dict(symbol=d.symbol, id=sid, seq=seq, symbol_seq=sseq,
                 exchange_ts=ets, receive_ts=rts, publish_ts=pts)
        px = lambda m: fixed(m, d.price_decimals)  # noqa: E731
        sz = lambda m: fixed(m, d.size_decimals)  # noqa: E731
        if kind == QUOTE:
            if flags & ~3:
                raise DecodeError(f"quote flags {flags:#06x}")
            b, bs, a, as_ = struct.unpack_from("<qqqq", p, 48)
            return Quote(**h, bid=px(b), bid_size=None if flags & 1 else sz(bs),
                         ask=px(a), ask_size=None if flags & 2 else sz(as_))
        if kind == TRADE:
            price, size = struct.unpack_from("<qq", p, 48)
            if byte1 not in SIDES:
                raise DecodeError(f"trade side {byte1}")
            return Trade(**h, price=px(price), size=sz(size), side=SIDES[byte1])
        if kind == STATUS:
            return Status(**h, state="live" if byte1 == 0 else "stale",
                          reason=None if byte1 == 0 else REASONS.get(byte1, "unknown"))
        if kind == BOOK:
            depth, nb, na, _ = struct.unpack_from("<HHHH", p, 48)
            if len(p) != 56 + 16 * (nb + na):
                raise DecodeError(f"book message of {len(p)} bytes")
            levels = [(px(a), sz(b)) for a, b in struct.iter_unpack("<qq", p[56:])]
            return Book(**h, channel="book" if depth == 0 else f"book.{depth}",
                        snapshot=bool(flags & 1), bids=levels[:nb], asks=levels[nb:])
        seconds, count = struct.unpack_from("<II", p, 48)
        n = count if kind == CANDLES else 1
        if byte1 >= len(INTERVALS) or len(p) != 56 + 64 * n:
            raise DecodeError(f"candle message of {len(p)} bytes")
        bars = []
        for k in range(n):
            o = 56 + 64 * k
            start, op, hi, lo, cl, vlo, vhi, trades = struct.unpack_from("<QqqqqQqQ", p, o)
            closed = (k + 1 < n or not flags & 4) if kind == CANDLES else bool(flags & 1)
            bars.append(Bar(start, px(op), px(hi), px(lo), px(cl), sz((vhi << 64) | vlo),
                            trades, closed))
        return Candles(**h, interval=INTERVALS[byte1], snapshot=bool(flags & 2), bars=bars,
                       type="candles" if kind == CANDLES else "candle")

    # -- JSON -----------------------------------------------------------

    def decode_json(self, text: str) -> Message:
        j = json.loads(text)
        if not isinstance(j, dict) or not isinstance(j.get("type"), str):
            raise DecodeError("a JSON message that is not an object with a string type")
        kind = j["type"]
        if kind == "symbol":
            sym = Symbol(j["id"], j["symbol"], j["price_decimals"], j["size_decimals"])
            self.symbols[sym.id] = sym
            return sym
        if kind not in ("quote", "trade", "status", "book", "candle", "candles"):
            return Control(j)
        if j["id"] not in self.symbols:
            raise DecodeError(f"an update of symbol {j['id']} before its definition")
        seq_key = {"book": "book_seq", "candle": "candle_seq", "candles": "candle_seq"}
        h = dict(symbol=j["symbol"], id=j["id"], seq=j["seq"],
                 symbol_seq=j[seq_key.get(kind, "symbol_seq")],
                 exchange_ts=j["exchange_ts"], receive_ts=j["receive_ts"],
                 publish_ts=j["publish_ts"])
        dec = lambda v: None if v is None else Decimal(v)  # noqa: E731
        if kind == "quote":
            return Quote(**h, bid=Decimal(j["bid"]), bid_size=dec(j["bid_size"]),
                         ask=Decimal(j["ask"]), ask_size=dec(j["ask_size"]))
        if kind == "trade":
            return Trade(**h, price=Decimal(j["price"]), size=Decimal(j["size"]), side=j["side"])
        if kind == "status":
            return Status(**h, state=j["state"], reason=j.get("reason"))
        if kind == "book":
            lv = lambda side: [(Decimal(a), Decimal(b)) for a, b in side]  # noqa: E731
            return Book(**h, channel=j["channel"], snapshot=j["snapshot"],
                        bids=lv(j["bids"]), asks=lv(j["asks"]))
        raw = j["bars"] if kind == "candles" else [j]
        bars = [Bar(b["start_ts"], Decimal(b["open"]), Decimal(b["high"]), Decimal(b["low"]),
                    Decimal(b["close"]), Decimal(b["volume"]), b["trades"], b["closed"])
                for b in raw]
        return Candles(**h, interval=j["interval"], snapshot=kind == "candles" and j["snapshot"],
                       bars=bars, type=kind)
