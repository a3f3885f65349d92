// tickwire client: WebSocket with the binary subprotocol `tickwire.v1`,
// falling back to Server-Sent Events (`/sse`) when no WebSocket can be
// opened. The wire is docs/PROTOCOL.md; this module follows it byte for byte.
//
//   import { TickwireClient } from "/tickwire.js";
//   const client = new TickwireClient({ symbols: ["*"] });
//   client.addEventListener("quote", (e) => console.log(e.detail.symbol, e.detail.bid));
//   client.start();
//
// Prices and sizes stay exact: mantissas are BigInt and the strings are
// made by placing the decimal point in the digits, never through a float.
// A quote's size the venue did not give is unknown: `bidSize` / `askSize`
// and `bidSz` / `askSz` are then null, never 0 (a real 0 is "0.00...").

export const SUBPROTOCOL = "tickwire.v1";
export const MSG_QUOTE = 1;
export const MSG_TRADE = 2;
export const MSG_SYMBOL = 3;
export const MSG_STATUS = 4;
export const MSG_BOOK = 5;
export const QUOTE_LEN = 80;
export const TRADE_LEN = 64;
export const STATUS_LEN = 48;
// A book message: the 48-byte header, depth, counts, then the levels.
export const BOOK_HEAD_LEN = 56;
/** A book level: price and size mantissas. */
const LEVEL_LEN = 16;
// A binary book's flags: the message is a snapshot, not changes.
export const BOOK_SNAPSHOT = 1;
// Candles: type 6 one bar, type 7 several; the 48-byte header, the
// interval in seconds and a count, then 64 bytes a bar.
export const MSG_CANDLE = 6;
export const MSG_CANDLES = 7;
export const CANDLE_HEAD_LEN = 56;
export const BAR_LEN = 64;
// Byte 1 of a candle message: the interval.
export const INTERVALS = ["1s", "1m", "5m", "15m", "1h", "1d"];
const INTERVAL_SECONDS = [1, 60, 300, 900, 3600, 86400];
// A candle's flags: closed; a candles message's: snapshot, the last bar open.
const CANDLE_CLOSED = 1;
const CANDLE_SNAPSHOT = 2;
const CANDLE_LAST_OPEN = 4;
// Bars a followed candle series keeps (the server sends up to its
// candle_history, 500 by default).
const MAX_BARS = 1000;
// A binary quote's flags, the u16 at offset 2: a size is unknown.
export const BID_SIZE_UNKNOWN = 1;
export const ASK_SIZE_UNKNOWN = 2;
const SIDES = ["unknown", "buy", "sell"];
// A status's byte 1: 0 live, else stale for this reason.
const STALE_REASONS = [null, "gap", "disconnected", "silent", "book_gap"];
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** `mantissa × 10^-decimals` as a string with exactly `decimals` decimals. */
export function formatFixed(mantissa, decimals) {
  const m = BigInt(mantissa);
  const neg = m < 0n;
  let digits = (neg ? -m : m).toString();
  if (decimals > 0) {
    // At least one integer digit, as the server writes it (decimal.rs).
    digits = digits.padStart(decimals + 1, "0");
    digits = `${digits.slice(0, -decimals)}.${digits.slice(-decimals)}`;
  }
  return neg ? `-${digits}` : digits;
}

/** A size's text, or null when it is unknown (a null mantissa). */
export function formatSize(mantissa, decimals) {
  return mantissa === null ? null : formatFixed(mantissa, decimals);
}

/** The mantissa of a decimal string written with `decimals` decimals. */
export function parseFixed(text, decimals) {
  const dot = text.indexOf(".");
  const frac = dot < 0 ? "" : text.slice(dot + 1);
  const int = dot < 0 ? text : text.slice(0, dot);
  if (frac.length > decimals) throw new Error(`${text} has more than ${decimals} decimals`);
  return BigInt(int + frac.padEnd(decimals, "0"));
}

function view(data) {
  if (data instanceof DataView) return data;
  if (data instanceof ArrayBuffer) return new DataView(data);
  return new DataView(data.buffer, data.byteOffset, data.byteLength);
}

// u64 counters (sequences) as Numbers: exact below 2^53, which a sequence
// reaches after 285 years at a million updates a second.
const seqAt = (v, o) => Number(v.getBigUint64(o, true));

/**
 * The updates of one binary WebSocket message, each a view of the same
 * buffer: one, or several end to end for a client that asked for batches
 * (`/ws?batch=1`), each as long as its type says.
 */
export function splitBinary(data) {
  const v = view(data);
  if (v.byteLength === 0) return [v];
  const out = [];
  for (let at = 0; at < v.byteLength; ) {
    const len = binaryLength(v, at);
    if (!(len > 0) || at + len > v.byteLength) throw new Error(`binary batch cut short at byte ${at} of ${v.byteLength}`);
    out.push(new DataView(v.buffer, v.byteOffset + at, len));
    at += len;
  }
  return out;
}

/** The length of the binary message at byte `at` of `v`, by its type. */
function binaryLength(v, at) {
  const need = (n) => (at + n <= v.byteLength ? n : NaN);
  switch (v.getUint8(at)) {
    case MSG_QUOTE:
      return QUOTE_LEN;
    case MSG_TRADE:
      return TRADE_LEN;
    case MSG_STATUS:
      return STATUS_LEN;
    case MSG_SYMBOL:
      return need(8) && 8 + v.getUint8(at + 3);
    case MSG_BOOK:
      return need(BOOK_HEAD_LEN) && BOOK_HEAD_LEN + LEVEL_LEN * (v.getUint16(at + 50, true) + v.getUint16(at + 52, true));
    case MSG_CANDLE:
      return CANDLE_HEAD_LEN + BAR_LEN;
    case MSG_CANDLES:
      return need(CANDLE_HEAD_LEN) && CANDLE_HEAD_LEN + BAR_LEN * v.getUint32(at + 52, true);
    default:
      return NaN;
  }
}

/**
 * Decodes one binary message (the WebSocket payload). Symbol definitions
 * are recorded in `symbols` (id -> definition), which later quotes and
 * trades need for their decimals.
 */
export function decodeBinary(data, symbols) {
  const v = view(data);
  const type = v.getUint8(0);
  if (type === MSG_SYMBOL) {
    const len = v.getUint8(3);
    if (v.byteLength !== 8 + len) throw new Error(`symbol message of ${v.byteLength} bytes, name of ${len}`);
    const def = {
      type: "symbol",
      id: v.getUint32(4, true),
      symbol: utf8.decode(new Uint8Array(v.buffer, v.byteOffset + 8, len)),
      priceDecimals: v.getUint8(1),
      sizeDecimals: v.getUint8(2),
    };
    symbols.set(def.id, def);
    return def;
  }
  if (type === MSG_BOOK) return decodeBookBinary(v, symbols);
  if (type === MSG_CANDLE || type === MSG_CANDLES) return decodeCandleBinary(v, symbols);
  if (type !== MSG_QUOTE && type !== MSG_TRADE && type !== MSG_STATUS) throw new Error(`unknown binary message type ${type}`);
  const want = type === MSG_QUOTE ? QUOTE_LEN : type === MSG_TRADE ? TRADE_LEN : STATUS_LEN;
  if (v.byteLength !== want) throw new Error(`message type ${type} of ${v.byteLength} bytes, not ${want}`);
  const id = v.getUint32(4, true);
  const def = symbols.get(id);
  if (!def) throw new Error(`update for symbol ${id} before its definition`);
  const m = {
    type: type === MSG_QUOTE ? "quote" : type === MSG_TRADE ? "trade" : "status",
    id,
    symbol: def.symbol,
    seq: seqAt(v, 8),
    symbolSeq: seqAt(v, 16),
    exchangeTs: v.getBigUint64(24, true),
    receiveTs: v.getBigUint64(32, true),
    publishTs: v.getBigUint64(40, true),
    priceDecimals: def.priceDecimals,
    sizeDecimals: def.sizeDecimals,
  };
  const px = (o) => v.getBigInt64(o, true);
  if (type === MSG_STATUS) {
    const code = v.getUint8(1);
    m.state = code === 0 ? "live" : "stale";
    m.reason = code === 0 ? null : (STALE_REASONS[code] ?? "unknown");
  } else if (type === MSG_QUOTE) {
    const flags = v.getUint16(2, true);
    // Bits this version does not define would change what the numbers mean.
    if (flags & ~(BID_SIZE_UNKNOWN | ASK_SIZE_UNKNOWN)) throw new Error(`quote flags 0x${flags.toString(16)} are not defined`);
    const size = (bit, o) => (flags & bit ? null : px(o));
    m.bidPx = px(48);
    m.bidSz = size(BID_SIZE_UNKNOWN, 56);
    m.askPx = px(64);
    m.askSz = size(ASK_SIZE_UNKNOWN, 72);
    m.bid = formatFixed(m.bidPx, def.priceDecimals);
    m.bidSize = formatSize(m.bidSz, def.sizeDecimals);
    m.ask = formatFixed(m.askPx, def.priceDecimals);
    m.askSize = formatSize(m.askSz, def.sizeDecimals);
  } else {
    m.side = SIDES[v.getUint8(1)] ?? "unknown";
    m.px = px(48);
    m.sz = px(56);
    m.price = formatFixed(m.px, def.priceDecimals);
    m.size = formatFixed(m.sz, def.sizeDecimals);
  }
  return m;
}

/**
 * A binary book message: `bids` and `asks` as `[price, size]` strings, best
 * first; a snapshot of the top `depth` levels (0: the whole book), or on the
 * `book` channel one event's changed levels (size 0: removed).
 */
function decodeBookBinary(v, symbols) {
  if (v.byteLength < BOOK_HEAD_LEN) throw new Error(`book message of ${v.byteLength} bytes`);
  const nb = v.getUint16(50, true);
  const na = v.getUint16(52, true);
  const want = BOOK_HEAD_LEN + 16 * (nb + na);
  if (v.byteLength !== want) throw new Error(`book message of ${v.byteLength} bytes, not ${want}`);
  const flags = v.getUint16(2, true);
  if (flags & ~BOOK_SNAPSHOT) throw new Error(`book flags 0x${flags.toString(16)} are not defined`);
  const id = v.getUint32(4, true);
  const def = symbols.get(id);
  if (!def) throw new Error(`book for symbol ${id} before its definition`);
  const depth = v.getUint16(48, true);
  const level = (i) => {
    const o = BOOK_HEAD_LEN + 16 * i;
    return [formatFixed(v.getBigInt64(o, true), def.priceDecimals), formatFixed(v.getBigInt64(o + 8, true), def.sizeDecimals)];
  };
  return {
    type: "book",
    id,
    symbol: def.symbol,
    channel: depth ? `book.${depth}` : "book",
    depth,
    seq: seqAt(v, 8),
    bookSeq: seqAt(v, 16),
    exchangeTs: v.getBigUint64(24, true),
    receiveTs: v.getBigUint64(32, true),
    publishTs: v.getBigUint64(40, true),
    snapshot: (flags & BOOK_SNAPSHOT) !== 0,
    bids: Array.from({ length: nb }, (_, i) => level(i)),
    asks: Array.from({ length: na }, (_, i) => level(nb + i)),
    priceDecimals: def.priceDecimals,
    sizeDecimals: def.sizeDecimals,
  };
}

// JSON.parse rounds 19-digit integers; the timestamps are read from the
// text instead, exactly.
/**
 * A binary candle (one bar) or candles (several) message: bars oldest
 * first, prices and volume as exact strings, `startMs` the bar's start.
 */
function decodeCandleBinary(v, symbols) {
  const type = v.getUint8(0);
  const list = type === MSG_CANDLES;
  if (v.byteLength < CANDLE_HEAD_LEN) throw new Error(`candle message of ${v.byteLength} bytes`);
  const count = v.getUint32(52, true);
  const n = list ? count : 1;
  const want = CANDLE_HEAD_LEN + BAR_LEN * n;
  if (v.byteLength !== want || (list ? count === 0 : count !== 0)) throw new Error(`candle message of ${v.byteLength} bytes, count ${count}`);
  const i = v.getUint8(1);
  if (i >= INTERVALS.length || v.getUint32(48, true) !== INTERVAL_SECONDS[i]) throw new Error(`candle interval ${i}`);
  const flags = v.getUint16(2, true);
  if (flags & ~(list ? CANDLE_SNAPSHOT | CANDLE_LAST_OPEN : CANDLE_CLOSED)) throw new Error(`candle flags 0x${flags.toString(16)} are not defined`);
  const id = v.getUint32(4, true);
  const def = symbols.get(id);
  if (!def) throw new Error(`candle for symbol ${id} before its definition`);
  const bars = [];
  for (let k = 0; k < n; k++) {
    const o = CANDLE_HEAD_LEN + BAR_LEN * k;
    const px = (at) => formatFixed(v.getBigInt64(o + at, true), def.priceDecimals);
    // i128, little-endian: the low half unsigned, the high half signed.
    const volume = (v.getBigInt64(o + 48, true) << 64n) | v.getBigUint64(o + 40, true);
    bars.push({
      startMs: Number(v.getBigUint64(o, true) / 1_000_000n),
      open: px(8),
      high: px(16),
      low: px(24),
      close: px(32),
      volume: formatFixed(volume, def.sizeDecimals),
      trades: Number(v.getBigUint64(o + 56, true)),
      closed: list ? k + 1 < n || !(flags & CANDLE_LAST_OPEN) : (flags & CANDLE_CLOSED) !== 0,
    });
  }
  return {
    type: list ? "candles" : "candle",
    id,
    symbol: def.symbol,
    interval: INTERVALS[i],
    channel: `candles.${INTERVALS[i]}`,
    seq: seqAt(v, 8),
    candleSeq: seqAt(v, 16),
    exchangeTs: v.getBigUint64(24, true),
    receiveTs: v.getBigUint64(32, true),
    publishTs: v.getBigUint64(40, true),
    snapshot: (flags & CANDLE_SNAPSHOT) !== 0,
    bars,
    priceDecimals: def.priceDecimals,
    sizeDecimals: def.sizeDecimals,
  };
}

const tsField = (text, key) => {
  const at = text.indexOf(`"${key}":`);
  if (at < 0) return 0n;
  const match = /^\d+/.exec(text.slice(at + key.length + 3, at + key.length + 24));
  return match ? BigInt(match[0]) : 0n;
};

/**
 * Decodes one JSON message (`tickwire.v1.json` and `/sse`) into the same
 * shape as {@link decodeBinary}. Control messages (ack, error, pong,
 * conflated) come back as parsed.
 */
export function decodeJson(text, symbols) {
  const j = JSON.parse(text);
  if (j.type === "symbol") {
    const def = {
      type: "symbol",
      id: j.id,
      symbol: j.symbol,
      priceDecimals: j.price_decimals,
      sizeDecimals: j.size_decimals,
    };
    symbols.set(def.id, def);
    return def;
  }
  if (j.type === "book") {
    const def = symbols.get(j.id);
    if (!def) throw new Error(`book for symbol ${j.id} before its definition`);
    const depth = j.channel === "book" ? 0 : Number(j.channel.slice(5));
    return {
      type: "book",
      id: j.id,
      symbol: j.symbol,
      channel: j.channel,
      depth,
      seq: j.seq,
      bookSeq: j.book_seq,
      exchangeTs: tsField(text, "exchange_ts"),
      receiveTs: tsField(text, "receive_ts"),
      publishTs: tsField(text, "publish_ts"),
      snapshot: j.snapshot,
      bids: j.bids,
      asks: j.asks,
      priceDecimals: def.priceDecimals,
      sizeDecimals: def.sizeDecimals,
    };
  }
  if (j.type === "candle" || j.type === "candles") {
    const def = symbols.get(j.id);
    if (!def) throw new Error(`candle for symbol ${j.id} before its definition`);
    // A bar's start is a whole second in ns: exact as a double.
    const bar = (b) => ({ startMs: b.start_ts / 1e6, open: b.open, high: b.high, low: b.low, close: b.close, volume: b.volume, trades: b.trades, closed: b.closed });
    return {
      type: j.type,
      id: j.id,
      symbol: j.symbol,
      interval: j.interval,
      channel: j.channel,
      seq: j.seq,
      candleSeq: j.candle_seq,
      exchangeTs: tsField(text, "exchange_ts"),
      receiveTs: tsField(text, "receive_ts"),
      publishTs: tsField(text, "publish_ts"),
      snapshot: j.type === "candles" && j.snapshot,
      bars: j.type === "candles" ? j.bars.map(bar) : [bar(j)],
      priceDecimals: def.priceDecimals,
      sizeDecimals: def.sizeDecimals,
    };
  }
  if (j.type !== "quote" && j.type !== "trade" && j.type !== "status") return j;
  const def = symbols.get(j.id);
  if (!def) throw new Error(`update for symbol ${j.id} before its definition`);
  const m = {
    type: j.type,
    id: j.id,
    symbol: j.symbol,
    seq: j.seq,
    symbolSeq: j.symbol_seq,
    exchangeTs: tsField(text, "exchange_ts"),
    receiveTs: tsField(text, "receive_ts"),
    publishTs: tsField(text, "publish_ts"),
    priceDecimals: def.priceDecimals,
    sizeDecimals: def.sizeDecimals,
  };
  const pd = def.priceDecimals;
  const sd = def.sizeDecimals;
  if (j.type === "status") {
    Object.assign(m, { state: j.state, reason: j.reason ?? null });
  } else if (j.type === "quote") {
    // An unknown size is `null`.
    const size = (text) => (text === null ? null : parseFixed(text, sd));
    Object.assign(m, { bid: j.bid, bidSize: j.bid_size, ask: j.ask, askSize: j.ask_size });
    m.bidPx = parseFixed(j.bid, pd);
    m.bidSz = size(j.bid_size);
    m.askPx = parseFixed(j.ask, pd);
    m.askSz = size(j.ask_size);
  } else {
    Object.assign(m, { price: j.price, size: j.size, side: j.side });
    m.px = parseFixed(j.price, pd);
    m.sz = parseFixed(j.size, sd);
  }
  return m;
}

const wallMs = () => (typeof performance !== "undefined" ? performance.timeOrigin + performance.now() : Date.now());

// A queue this long is decoded at once rather than waiting for a frame
// that a hidden tab may not draw for a while: memory stays bounded.
const MAX_QUEUED = 50_000;

/**
 * A connection to tickwire that survives the server going away.
 *
 * Events (CustomEvent, the message in `detail`):
 * - `symbol`: a symbol definition;
 * - `quote`, `trade`: an update; `snapshot` is true for the values the
 *   server sent from its cache (after a subscribe or a conflation) rather
 *   than live, `latencyMs` is publish-to-arrival;
 * - `status`: `{state, transport, subprotocol, ...}` on every change;
 *   state is `connecting`, `live`, `reconnecting` or `closed`;
 * - `symbolstatus`: a symbol's data turned `stale` (`reason`: `gap`,
 *   `disconnected`, `silent`: the server's upstream feed lost it) or
 *   `live` again; `client.stale` maps the stale symbols to their reason;
 * - `gap`: a jump in a symbol's sequence (`explained` when the server
 *   announced it: conflation, or a resumed SSE stream);
 * - `top`: with the `book.1` channel (option `channels`), each symbol's
 *   best bid and ask from its book as a quote-like message (`bid`, `ask`,
 *   `bidSize`, `askSize`, `bidPx`, `askPx`): for a venue that sends depth
 *   and no best bid and offer;
 * - `book`: the order book followed with {@link watchBook}, after each
 *   message: `{symbol, channel, bookSeq, bids, asks, changed, latencyMs}`,
 *   levels as `[price, size]` strings best first, `changed` the set of
 *   `"b:price"` / `"a:price"` whose size changed (for flashing);
 * - `candles`: the candles followed with {@link watchCandles}, after each
 *   message: `{symbol, interval, bars}`, bars oldest first, each
 *   `{startMs, open, high, low, close, volume, trades, closed}` (prices
 *   and volume as exact strings);
 * - `conflated`: the server's notice; `error`: a refused request;
 * - `batch`: after each batch of messages, once per animation frame: the
 *   moment to draw.
 */
export class TickwireClient extends EventTarget {
  constructor(options = {}) {
    super();
    const origin = options.url ?? (typeof location !== "undefined" ? location.origin : "http://127.0.0.1:8080");
    this.httpBase = origin.replace(/\/$/, "");
    this.wsPath = options.wsPath ?? "/ws";
    this.ssePath = options.ssePath ?? "/sse";
    this.pollPath = options.pollPath ?? "/poll";
    this.transportMode = options.transport ?? "auto"; // auto | websocket | sse | poll
    // An event stream that delivers nothing (not even the ack the server
    // sends at once) for this long is taken as blocked (a proxy that
    // buffers the response): long-polling next.
    this.sseTimeoutMs = options.sseTimeoutMs ?? 5000;
    // How long the server may hold a poll (its poll_timeout_ms caps it).
    this.pollTimeoutMs = options.pollTimeoutMs ?? 25_000;
    // Set once a WebSocket has opened: from then on, failures are the
    // server's absence, and the client does not fall back to SSE.
    this._webSocketWorked = false;
    this.initialBackoffMs = options.initialBackoffMs ?? 250;
    this.maxBackoffMs = options.maxBackoffMs ?? 5000;
    this.batchPerFrame = options.batchPerFrame ?? typeof requestAnimationFrame === "function";
    // Several updates per WebSocket message (`/ws?batch=1`): a browser
    // spends more per message than per byte.
    this.wsBatch = options.wsBatch ?? true;
    this.wanted = { all: false, names: new Set() };
    // The channels of every subscription (`undefined`: the server's
    // default, quotes and trades).
    this.channels = options.channels;
    // The throttle of every subscription but the followed book's symbol
    // (`throttle_ms`: per symbol, at most one state message per interval,
    // the newest; every trade): `undefined` for none.
    this.throttleMs = options.throttleMs;
    for (const s of options.symbols ?? []) this._want(s, true);

    this.state = "closed";
    this.transport = null;
    this.subprotocol = null;
    this.bySymbolId = new Map();
    this.knownSymbols = new Set();
    this.messages = 0;
    this.conflatedUpdates = 0;
    this.gaps = 0;
    this.missedUpdates = 0;
    /** Updates a throttle skipped (the newest came instead): not gaps. */
    this.throttledSkips = 0;
    /** Updates a conflation replaced (the newest came instead): not gaps. */
    this.conflatedSkips = 0;
    /** Symbols the server says are stale now: name -> reason. */
    this.stale = new Map();
    this.lastError = null;

    this._ws = null;
    this._es = null;
    this._attempt = 0;
    this._timer = null;
    this._queue = [];
    this._scheduled = false;
    this._lastSymbolSeq = new Map();
    this._cacheFramesLeft = 0;
    this._nextRequestId = 1;
    this._requests = new Map();
    this._stopped = true;
    /** The candle interval followed for the book's symbol (`"1m"`), or null. */
    this.candleInterval = options.candleInterval ?? null;
    /** Its bars: `{symbol, interval, bars}`, bars oldest first. */
    this.candles = null;
    /** The book followed: `{symbol, channel}` or null. */
    this.bookWatch = null;
    /** Its local copy: `{symbol, channel, bookSeq, bids, asks}`, levels best first. */
    this.book = null;
    this._bookEs = null;
    // The long-poll loops running: AbortControllers.
    this._polls = [];
  }

  /**
   * Follows `symbol`'s order book on `channel` (`book.N`: the top N levels,
   * whole, on each change; `book`: the full book as a snapshot then
   * changes), replacing the book followed before; `null` stops. Over a
   * WebSocket it is a subscription on the same connection; over Server-Sent
   * Events, a second stream.
   */
  watchBook(symbol, channel = "book.20") {
    const old = this.bookWatch;
    if (old && this._ws?.readyState === 1) {
      this._ws.send(JSON.stringify({ op: "unsubscribe", symbols: [old.symbol], channels: this._followed(old.channel), id: this._nextRequestId++ }));
      // Following its book took the old symbol out of the throttle: put
      // it back.
      if (this.throttleMs && this.wants(old.symbol) && old.symbol !== symbol) {
        const id = this._nextRequestId++;
        const req = { op: "subscribe", symbols: [old.symbol], id, channels: this.channels, throttle_ms: this.throttleMs };
        this._requests.set(id, req);
        this._ws.send(JSON.stringify(req));
      }
    }
    this.bookWatch = symbol ? { symbol, channel } : null;
    this.book = null;
    this.candles = null;
    this._subscribeBook();
  }

  /**
   * Follows the candles of the symbol whose book is followed
   * ({@link watchBook}) at `interval` (`"1s"`, `"1m"`, `"5m"`, `"15m"`,
   * `"1h"`, `"1d"`; null stops): the kept bars at once, then each change.
   * The bars are `client.candles`; a `candles` event says they changed.
   */
  watchCandles(interval) {
    const w = this.bookWatch;
    const old = this.candleInterval;
    if (interval === old) return;
    this.candleInterval = interval;
    this.candles = null;
    if (!w) return;
    if (this.transport === "websocket" && this._ws?.readyState === 1) {
      if (old) this._ws.send(JSON.stringify({ op: "unsubscribe", symbols: [w.symbol], channels: [`candles.${old}`], id: this._nextRequestId++ }));
      if (interval) {
        const id = this._nextRequestId++;
        const req = { op: "subscribe", symbols: [w.symbol], channels: [`candles.${interval}`], id };
        this._requests.set(id, { ...req, follow: true });
        this._ws.send(JSON.stringify(req));
      }
    } else {
      this._subscribeBook();
    }
  }

  /** The channels of the followed symbol: its book's, and its candles'. */
  _followed(bookChannel) {
    return this.candleInterval ? [bookChannel, `candles.${this.candleInterval}`] : [bookChannel];
  }

  _subscribeBook() {
    if (this._bookEs) {
      this._bookEs.onmessage = this._bookEs.onerror = null;
      this._bookEs.close();
      this._bookEs = null;
    }
    for (const c of this._polls.filter((c) => c.book)) c.abort();
    this._polls = this._polls.filter((c) => !c.book);
    const w = this.bookWatch;
    if (!w) return;
    const channels = this._followed(w.channel);
    // On a second stream, its ack and definitions repeat the main
    // stream's: only books and candles count.
    const ours = (text) => text.startsWith('{"type":"book"') || text.startsWith('{"type":"candle') || text.startsWith('{"type":"symbol"');
    if (this.transport === "websocket" && this._ws?.readyState === 1) {
      const id = this._nextRequestId++;
      // `follow`: refused, it changes nothing the client wants of the grid.
      this._requests.set(id, { op: "subscribe", symbols: [w.symbol], channels, follow: true });
      this._ws.send(JSON.stringify({ op: "subscribe", symbols: [w.symbol], channels, id }));
      // Throttled until the server has taken this subscribe: what is on
      // the way skips by the throttle still.
      w.unthrottleId = id;
    } else if (this.transport === "poll") {
      // A second poll loop, for the book and candles only.
      const query = `symbols=${encodeURIComponent(w.symbol)}&channels=${encodeURIComponent(channels.join(","))}`;
      this._pollLoop(query, ours, () => {}, true);
    } else if (this.transport === "sse" && typeof EventSource === "function") {
      const url = `${this.httpBase}${this.ssePath}?symbols=${encodeURIComponent(w.symbol)}&channels=${encodeURIComponent(channels.join(","))}`;
      const es = new EventSource(url);
      this._bookEs = es;
      es.onmessage = (ev) => {
        if (ours(ev.data)) this._enqueue(ev.data);
      };
    }
  }

  /** A `book.1` message as a quote-like `top` event. */
  _top(m, receivedAt) {
    const [bid, bidSize] = m.bids[0] ?? [null, null];
    const [ask, askSize] = m.asks[0] ?? [null, null];
    if (bid === null || ask === null) return;
    const pd = m.priceDecimals;
    this._emit("top", {
      type: "top",
      symbol: m.symbol,
      id: m.id,
      bid,
      bidSize,
      ask,
      askSize,
      bidPx: parseFixed(bid, pd),
      askPx: parseFixed(ask, pd),
      bidSz: parseFixed(bidSize, m.sizeDecimals),
      askSz: parseFixed(askSize, m.sizeDecimals),
      priceDecimals: pd,
      sizeDecimals: m.sizeDecimals,
      symbolSeq: m.bookSeq,
      publishTs: m.publishTs,
      receivedAt,
      latencyMs: receivedAt - Number(m.publishTs) / 1e6,
    });
  }

  /** Applies one book message to the local book; false if it is not the one followed. */
  _bookMessage(m, receivedAt) {
    const w = this.bookWatch;
    if (!w || m.symbol !== w.symbol || m.channel !== w.channel) return false;
    const before = this.book;
    if (m.snapshot) {
      if (before && m.bookSeq < before.bookSeq) return false;
      this.book = { symbol: m.symbol, channel: m.channel, bookSeq: m.bookSeq, bids: m.bids, asks: m.asks };
    } else if (!before || m.bookSeq !== before.bookSeq + 1) {
      // A change that does not follow: ask again for a snapshot.
      this.book = null;
      this._emit("gap", { symbol: m.symbol, book: true, after: before?.bookSeq, got: m.bookSeq, explained: false });
      this._subscribeBook();
      return false;
    } else {
      const apply = (levels, changes, ask) => {
        const pd = m.priceDecimals;
        const map = new Map(levels.map((l) => [l[0], l]));
        for (const [p, q] of changes) {
          if (parseFixed(q, m.sizeDecimals) === 0n) map.delete(p);
          else map.set(p, [p, q]);
        }
        const out = [...map.values()];
        out.sort((a, b) => {
          const d = parseFixed(a[0], pd) - parseFixed(b[0], pd);
          return (ask ? d > 0n : d < 0n) ? 1 : d === 0n ? 0 : -1;
        });
        return out;
      };
      this.book = {
        symbol: m.symbol,
        channel: m.channel,
        bookSeq: m.bookSeq,
        bids: apply(before.bids, m.bids, false),
        asks: apply(before.asks, m.asks, true),
      };
    }
    const changed = new Set();
    const old = (side) => new Map((before?.[side] ?? []).map(([p, q]) => [p, q]));
    for (const [side, tag] of [["bids", "b"], ["asks", "a"]]) {
      const was = old(side);
      for (const [p, q] of this.book[side]) if (was.get(p) !== q) changed.add(`${tag}:${p}`);
    }
    this._emit("book", { ...this.book, changed, snapshot: m.snapshot, latencyMs: receivedAt - Number(m.publishTs) / 1e6 });
    return true;
  }

  /** Applies one candle message to the followed series; false if it is not followed. */
  _candleMessage(m, receivedAt) {
    const w = this.bookWatch;
    if (!w || m.symbol !== w.symbol || m.interval !== this.candleInterval) return false;
    const c = this.candles;
    // A snapshot replaces the series; anything else is merged by start.
    const bars = m.snapshot || !c || c.symbol !== m.symbol || c.interval !== m.interval ? [] : c.bars;
    for (const b of m.bars) {
      let k = bars.length - 1;
      while (k >= 0 && bars[k].startMs > b.startMs) k--;
      if (k >= 0 && bars[k].startMs === b.startMs) bars[k] = b;
      else bars.splice(k + 1, 0, b);
    }
    if (bars.length > MAX_BARS) bars.splice(0, bars.length - MAX_BARS);
    this.candles = { symbol: m.symbol, interval: m.interval, bars, candleSeq: m.candleSeq };
    this._emit("candles", { ...this.candles, latencyMs: receivedAt - Number(m.publishTs) / 1e6 });
    return true;
  }

  /** Connects, and keeps reconnecting until {@link close}. */
  start() {
    this._stopped = false;
    this._connect();
    return this;
  }

  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    this._dropTransport();
    this._setState("closed");
  }

  /** Adds symbols (`"*"` is every symbol); live, and again on reconnect. */
  subscribe(symbols) {
    const list = [].concat(symbols);
    for (const s of list) this._want(s, true);
    this._request("subscribe", list);
  }

  unsubscribe(symbols) {
    const list = [].concat(symbols);
    for (const s of list) this._want(s, false);
    for (const name of list) {
      for (const [id, def] of this.bySymbolId) if (name === "*" || def.symbol === name) this._lastSymbolSeq.delete(id);
    }
    this._request("unsubscribe", list);
  }

  /** Whether updates of `name` are wanted now. */
  wants(name) {
    return this.wanted.all || this.wanted.names.has(name);
  }

  /** What the client subscribes to: `["*"]` or the names. */
  subscriptions() {
    return this.wanted.all ? ["*"] : [...this.wanted.names];
  }

  // The server's rules (docs/PROTOCOL.md, Requests), mirrored so that a
  // reconnect asks for exactly what the old connection had.
  _want(name, on) {
    const w = this.wanted;
    if (name === "*") {
      w.all = on;
      w.names.clear();
    } else if (on) {
      if (!w.all) w.names.add(name);
    } else if (w.all) {
      w.all = false;
      w.names = new Set([...this.knownSymbols].filter((n) => n !== name));
    } else {
      w.names.delete(name);
    }
  }

  _request(op, symbols) {
    if (this.transport === "poll") {
      // A poll's subscription is its query: start over with the new one.
      if (this.state === "live") this._openPoll(() => this._retry("long-poll failed"));
      return;
    }
    if (this.transport === "sse") {
      // An event stream's subscription is its URL: open the new one.
      if (this.state === "live") this._openSse(() => this._retry("event stream failed"));
      return;
    }
    if (this._ws?.readyState !== 1) return; // sent on (re)connect
    const id = this._nextRequestId++;
    this._requests.set(id, { op, symbols });
    const throttle_ms = op === "subscribe" ? this.throttleMs : undefined;
    this._ws.send(JSON.stringify({ op, symbols, id, channels: this.channels, throttle_ms }));
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("status", { state, transport: this.transport, subprotocol: this.subprotocol, ...extra });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _dropTransport() {
    if (this._ws) {
      this._ws.onopen = this._ws.onmessage = this._ws.onclose = this._ws.onerror = null;
      try {
        this._ws.close();
      } catch {
        // Closing a socket that never opened throws in some browsers.
      }
      this._ws = null;
    }
    if (this._es) {
      this._es.onopen = this._es.onmessage = this._es.onerror = null;
      this._es.close();
      this._es = null;
    }
    if (this._bookEs) {
      this._bookEs.onmessage = this._bookEs.onerror = null;
      this._bookEs.close();
      this._bookEs = null;
    }
    for (const c of this._polls) c.abort();
    this._polls = [];
    this._queue.length = 0;
  }

  // A new connection: new symbol ids (a restarted server may number them
  // differently), new sequences, a new snapshot.
  _freshConnection() {
    this._queue.length = 0;
    this.bySymbolId.clear();
    this._lastSymbolSeq.clear();
    this._cacheFramesLeft = 0;
    this._requests.clear();
    this.book = null;
  }

  _connect() {
    if (this._stopped) return;
    this._setState(this._attempt === 0 && this.messages === 0 ? "connecting" : "reconnecting", { attempt: this._attempt });
    if (this.transportMode === "sse") return this._openSse(() => this._retry());
    if (this.transportMode === "poll") return this._openPoll(() => this._retry());
    this._openWebSocket(() => {
      // A WebSocket that worked before and now fails means the server is
      // away (restarting), not that something on the path blocks
      // WebSocket: keep to it, or a restart would leave us on the event
      // stream for good.
      if (this.transportMode === "websocket" || this._webSocketWorked) return this._retry();
      // No WebSocket at all: try the event stream, then long-polling,
      // before waiting.
      this._openSse((why) => {
        if (typeof fetch !== "function") return this._retry(why);
        this._openPoll(() => this._retry());
      });
    });
  }

  _retry(reason) {
    this._dropTransport();
    if (this._stopped) return;
    // Exponential backoff with jitter, so that a restarted server is not
    // met by every client at the same instant.
    const base = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** this._attempt);
    const delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
    this._attempt++;
    this.transport = null;
    this.subprotocol = null;
    this._setState("reconnecting", { attempt: this._attempt, delayMs, reason });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delayMs);
  }

  _openWebSocket(onFail) {
    const path = this.wsBatch ? `${this.wsPath}${this.wsPath.includes("?") ? "&" : "?"}batch=1` : this.wsPath;
    const url = this.httpBase.replace(/^http/, "ws") + path;
    let ws;
    try {
      ws = new WebSocket(url, SUBPROTOCOL);
    } catch (e) {
      return onFail(String(e));
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this._webSocketWorked = true;
      this._attempt = 0;
      this._freshConnection();
      this.transport = "websocket";
      this.subprotocol = ws.protocol || SUBPROTOCOL;
      const symbols = this.subscriptions();
      if (symbols.length) {
        const id = this._nextRequestId++;
        this._requests.set(id, { op: "subscribe", symbols });
        ws.send(JSON.stringify({ op: "subscribe", symbols, id, channels: this.channels, throttle_ms: this.throttleMs }));
      }
      this._setState("live");
      this._subscribeBook();
    };
    ws.onmessage = (ev) => this._enqueue(ev.data);
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      if (!opened) {
        this._ws = null;
        return onFail(`WebSocket closed before opening (${ev.code})`);
      }
      this._retry(`closed ${ev.code}${ev.reason ? ` ${ev.reason}` : ""}`);
    };
  }

  _pollQuery() {
    const symbols = this.subscriptions().map(encodeURIComponent).join(",");
    const channels = this.channels ? `&channels=${this.channels.map(encodeURIComponent).join(",")}` : "";
    return `symbols=${symbols}${channels}`;
  }

  /**
   * Long-polls `query` until aborted: the first answer is the snapshot,
   * each next one what changed since the last (`next`). Each answer's
   * messages (NDJSON, the JSON of `tickwire.v1.json`) that `keep` accepts
   * go through the usual decoding. `onFirst(ok, why)` is told how the
   * first poll went; a later failure retries the connection, unless `book`
   * (the book's loop only stops).
   */
  _pollLoop(query, keep, onFirst, book = false) {
    const ctl = new AbortController();
    ctl.book = book;
    this._polls.push(ctl);
    const run = async () => {
      let since = null;
      for (;;) {
        const url = `${this.httpBase}${this.pollPath}?${query}${since === null ? "" : `&since=${since}&timeout_ms=${this.pollTimeoutMs}`}`;
        let text;
        try {
          const r = await fetch(url, { signal: ctl.signal, cache: "no-store" });
          if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
          text = await r.text();
        } catch (e) {
          if (ctl.signal.aborted) return;
          if (since === null) return onFirst(false, `long-poll failed: ${e.message ?? e}`);
          if (!book) this._retry(`long-poll failed: ${e.message ?? e}`);
          return;
        }
        if (ctl.signal.aborted) return;
        const lines = text.split("\n").filter((l) => l.length > 0);
        const head = JSON.parse(lines[0] ?? "{}");
        if (head.type !== "poll") {
          if (since === null) return onFirst(false, "not a long-poll answer");
          if (!book) this._retry("not a long-poll answer");
          return;
        }
        if (since === null) onFirst(true);
        for (const l of lines.slice(1)) if (keep(l)) this._enqueue(l);
        since = head.next;
      }
    };
    run();
    return ctl;
  }

  _openPoll(onFail) {
    for (const c of this._polls.filter((c) => !c.book)) c.abort();
    this._polls = this._polls.filter((c) => c.book);
    if (this.subscriptions().length === 0) {
      this._freshConnection();
      this.transport = "poll";
      this.subprotocol = "poll (tickwire.v1.json)";
      return this._setState("live");
    }
    this._pollLoop(this._pollQuery(), () => true, (ok, why) => {
      if (!ok) return onFail(why);
      this._attempt = 0;
      this._freshConnection();
      this.transport = "poll";
      this.subprotocol = "poll (tickwire.v1.json)";
      this._setState("live");
      if (!this._polls.some((c) => c.book)) this._subscribeBook();
    });
  }

  _sseUrl() {
    const symbols = this.subscriptions().map(encodeURIComponent).join(",");
    const channels = this.channels ? `&channels=${this.channels.map(encodeURIComponent).join(",")}` : "";
    const throttle = this.throttleMs ? `&throttle_ms=${this.throttleMs}` : "";
    return `${this.httpBase}${this.ssePath}?symbols=${symbols}${channels}${throttle}`;
  }

  _openSse(onFail) {
    if (this._es) {
      this._es.onopen = this._es.onmessage = this._es.onerror = null;
      this._es.close();
      this._es = null;
    }
    if (typeof EventSource !== "function") return onFail("no EventSource");
    if (this.subscriptions().length === 0) {
      // Nothing to stream: an idle but usable connection.
      this._freshConnection();
      this.transport = "sse";
      this.subprotocol = "sse (tickwire.v1.json)";
      return this._setState("live");
    }
    const es = new EventSource(this._sseUrl());
    this._es = es;
    let opened = false;
    let heard = false;
    // The server's first chunk (its ack) comes at once; a stream that
    // stays silent is held up on the way.
    const silent = setTimeout(() => {
      if (this._es !== es || heard) return;
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
      this._es = null;
      onFail(`event stream silent for ${this.sseTimeoutMs} ms`);
    }, this.sseTimeoutMs);
    es.onopen = () => {
      // Also after the browser's own reconnect (with Last-Event-ID): the
      // server starts every stream with an ack and the definitions again.
      opened = true;
      this._attempt = 0;
      this._freshConnection();
      this.transport = "sse";
      this.subprotocol = "sse (tickwire.v1.json)";
      this._setState("live");
      if (!this._bookEs) this._subscribeBook();
    };
    es.onmessage = (ev) => {
      heard = true;
      clearTimeout(silent);
      this._enqueue(ev.data);
    };
    es.onerror = () => {
      if (this._es !== es) return;
      if (!opened || es.readyState === 2) clearTimeout(silent);
      if (!opened || es.readyState === 2) return onFail("event stream failed");
      // CONNECTING: the browser reconnects by itself, with Last-Event-ID.
      this._setState("reconnecting", { reason: "event stream interrupted" });
    };
  }

  _enqueue(data) {
    this._queue.push(data, wallMs());
    if (this._queue.length > 2 * MAX_QUEUED) return this._flush();
    if (this._scheduled) return;
    this._scheduled = true;
    const hidden = typeof document !== "undefined" && document.hidden;
    if (this.batchPerFrame && !hidden) requestAnimationFrame(() => this._flush());
    else setTimeout(() => this._flush(), 0);
  }

  /** Decodes everything queued, emits it, then `batch`. */
  _flush() {
    this._scheduled = false;
    const q = this._queue;
    this._queue = [];
    let count = 0;
    for (let i = 0; i < q.length; i += 2) {
      let parts;
      try {
        // A batch (`/ws?batch=1`): binary updates end to end, JSON one per line.
        parts = typeof q[i] === "string" ? q[i].split("\n") : splitBinary(q[i]);
      } catch (e) {
        this.lastError = e;
        this._emit("error", { reason: String(e) });
        continue;
      }
      for (const part of parts) {
        try {
          if (this._handle(part, q[i + 1])) count++;
        } catch (e) {
          this.lastError = e;
          this._emit("error", { reason: String(e) });
        }
      }
    }
    if (q.length) this._emit("batch", { count });
  }

  _handle(data, receivedAt) {
    this.messages++;
    const m = typeof data === "string" ? decodeJson(data, this.bySymbolId) : decodeBinary(data, this.bySymbolId);
    switch (m.type) {
      case "symbol":
        this.knownSymbols.add(m.symbol);
        this._emit("symbol", m);
        return false;
      case "quote":
      case "trade":
        return this._update(m, receivedAt);
      case "book":
        // Counted in a snapshot like the updates it comes with.
        if (m.snapshot && this._cacheFramesLeft > 0) this._cacheFramesLeft--;
        if (m.channel === "book.1" && this.wants(m.symbol)) this._top(m, receivedAt);
        return this._bookMessage(m, receivedAt);
      case "candle":
      case "candles":
        if (m.snapshot && this._cacheFramesLeft > 0) this._cacheFramesLeft--;
        return this._candleMessage(m, receivedAt);
      case "status":
        // Counted in a snapshot like the updates it comes with.
        if (this._cacheFramesLeft > 0) this._cacheFramesLeft--;
        if (!this.wants(m.symbol)) return false;
        if (m.state === "stale") this.stale.set(m.symbol, m.reason);
        else this.stale.delete(m.symbol);
        this._emit("symbolstatus", m);
        return true;
      case "ack":
        this._requests.delete(m.id);
        if (this.bookWatch?.unthrottleId === m.id) this.bookWatch.unthrottleId = undefined;
        this._cacheFramesLeft += m.snapshot ?? 0;
        return false;
      case "conflated":
        this._cacheFramesLeft += m.latest;
        this.conflatedUpdates += m.dropped;
        this._emit("conflated", m);
        return false;
      case "error": {
        const req = this._requests.get(m.id);
        this._requests.delete(m.id);
        // A refused subscribe changed nothing on the server: forget it here.
        // (A followed book's or candles' refusal leaves the grid's alone.)
        if (req?.op === "subscribe" && !req.follow) for (const s of req.symbols) this._want(s, false);
        this._emit("error", { ...m, request: req });
        return false;
      }
      default:
        return false;
    }
  }

  /** Whether the server throttles `name` for this client (a skip in its sequence is then expected). */
  _isThrottled(name) {
    // A poll answers the newest quote of what changed since the last.
    if (this.transport === "poll") return true;
    if (!this.throttleMs) return false;
    // Over WebSocket the followed book's symbol is subscribed without one.
    return this.transport === "sse" || this.bookWatch?.symbol !== name || this.bookWatch.unthrottleId !== undefined;
  }

  _update(m, receivedAt) {
    // Updates already on the way when an unsubscribe went out.
    if (!this.wants(m.symbol)) return false;
    m.snapshot = this._cacheFramesLeft > 0;
    if (m.snapshot) this._cacheFramesLeft--;
    m.receivedAt = receivedAt;
    m.latencyMs = receivedAt - Number(m.publishTs) / 1e6;
    const prev = this._lastSymbolSeq.get(m.id);
    if (prev !== undefined) {
      // The server never sends an older update after a newer one; drop one
      // that would go backwards rather than show it.
      if (m.symbolSeq <= prev) return false;
      if (m.symbolSeq > prev + 1) {
        const missed = m.symbolSeq - prev - 1;
        const throttled = this._isThrottled(m.symbol);
        if (throttled) {
          this.throttledSkips += missed;
        } else if (m.snapshot) {
          // The newest value after a conflation (or a subscribe): what it
          // replaced was conflated, not lost.
          this.conflatedSkips += missed;
        } else {
          this.gaps++;
          this.missedUpdates += missed;
        }
        this._emit("gap", { symbol: m.symbol, id: m.id, after: prev, got: m.symbolSeq, missed, explained: m.snapshot || throttled, throttled });
      }
    }
    this._lastSymbolSeq.set(m.id, m.symbolSeq);
    this._emit(m.type, m);
    return true;
  }
}
