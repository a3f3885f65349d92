// The decoder against frames the Rust encoder produced (fixtures/frames.json,
// written and kept current by tests/web_fixture.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { TickwireClient, decodeBinary, decodeJson, formatFixed, parseFixed, splitBinary } from "../tickwire.js";

const fixture = JSON.parse(readFileSync(new URL("./fixtures/frames.json", import.meta.url), "utf8"));

const bytes = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));

// Only the fields the fixture states, with BigInts as the strings it uses.
function comparable(decoded, expect) {
  const out = {};
  for (const key of Object.keys(expect)) {
    const v = decoded[key];
    out[key] = typeof v === "bigint" ? v.toString() : v;
  }
  return out;
}

test("the fixture covers definitions, quotes, trades, statuses, books and candles", () => {
  const types = new Set(fixture.messages.map((m) => m.expect.type));
  assert.deepEqual([...types].sort(), ["book", "candle", "candles", "quote", "status", "symbol", "trade"]);
});

test("binary frames decode to the encoder's values", () => {
  const symbols = new Map();
  for (const [i, m] of fixture.messages.entries()) {
    // A copy at an odd offset in a bigger buffer: the decoder must honour
    // the view's offset, as it would for a slice.
    const raw = bytes(m.binary);
    const padded = new Uint8Array(raw.length + 3);
    padded.set(raw, 3);
    const got = decodeBinary(padded.subarray(3), symbols);
    assert.deepEqual(comparable(got, m.expect), m.expect, `message ${i}`);
    assert.deepEqual(comparable(decodeBinary(raw.slice().buffer, new Map(symbols)), m.expect), m.expect);
  }
});

test("a batch (every fixture message end to end) splits into the same messages, and one cut short is refused", () => {
  const raws = fixture.messages.map((m) => bytes(m.binary));
  const all = new Uint8Array(raws.reduce((n, r) => n + r.length, 0) + 5);
  let at = 5;
  for (const r of raws) {
    all.set(r, at);
    at += r.length;
  }
  const batch = all.subarray(5);
  const parts = splitBinary(batch);
  assert.equal(parts.length, raws.length);
  const symbols = new Map();
  for (const [i, part] of parts.entries()) {
    assert.deepEqual(new Uint8Array(part.buffer, part.byteOffset, part.byteLength), raws[i], `part ${i}`);
    assert.deepEqual(comparable(decodeBinary(part, symbols), fixture.messages[i].expect), fixture.messages[i].expect);
  }
  assert.throws(() => splitBinary(batch.subarray(0, batch.length - 1)), /cut short/);
  assert.throws(() => splitBinary(Uint8Array.of(99, 0, 0, 0)), /cut short/);
});

test("after a conflation, what the newest values skipped is not a gap; a skip without one is", () => {
  const client = new TickwireClient({ url: "http://127.0.0.1:9", symbols: ["*"] });
  const quotes = fixture.messages.filter((m) => m.expect.type === "quote");
  const defs = fixture.messages.filter((m) => m.expect.type === "symbol");
  for (const m of defs) client._handle(bytes(m.binary).buffer, 0);
  // A quote, then its symbol_seq 10 later: once after a conflated notice
  // (the newest value from the cache), once without.
  const q = bytes(quotes[0].binary);
  const at = (symbolSeq, seq) => {
    const copy = q.slice();
    const v = new DataView(copy.buffer);
    v.setBigUint64(8, BigInt(seq), true);
    v.setBigUint64(16, BigInt(symbolSeq), true);
    return copy.buffer;
  };
  client._handle(at(1, 1), 0);
  client._handle(JSON.stringify({ type: "conflated", dropped: 9, latest: 1 }), 0);
  client._handle(at(11, 11), 0);
  assert.deepEqual([client.gaps, client.conflatedSkips, client.conflatedUpdates], [0, 9, 9]);
  client._handle(at(21, 21), 0);
  assert.deepEqual([client.gaps, client.missedUpdates], [1, 9]);
});

test("JSON messages decode to the same values, timestamps exact", () => {
  const symbols = new Map();
  for (const [i, m] of fixture.messages.entries()) {
    const got = decodeJson(m.json, symbols);
    assert.deepEqual(comparable(got, m.expect), m.expect, `message ${i}`);
  }
});

test("binary and JSON agree field for field", () => {
  const sb = new Map();
  const sj = new Map();
  for (const m of fixture.messages) {
    const b = decodeBinary(bytes(m.binary), sb);
    const j = decodeJson(m.json, sj);
    assert.deepEqual(b, j);
  }
});

test("malformed binary messages are refused", () => {
  const symbols = new Map();
  const def = fixture.messages.find((m) => m.expect.type === "symbol");
  decodeBinary(bytes(def.binary), symbols);
  const quote = fixture.messages.find((m) => m.expect.type === "quote" && m.expect.id === def.expect.id);
  // TC0: cut short.
  assert.throws(() => decodeBinary(bytes(quote.binary).slice(0, 79), symbols), /80/);
  // TC1: unknown type.
  assert.throws(() => decodeBinary(Uint8Array.of(9, 0, 0, 0), symbols), /type 9/);
  // TC2: an update before its symbol's definition.
  assert.throws(() => decodeBinary(bytes(quote.binary), new Map()), /before its definition/);
});

test("an unknown size is null in both subprotocols, and a real zero is 0", () => {
  const sb = new Map();
  const sj = new Map();
  const sizes = [];
  for (const m of fixture.messages) {
    const b = decodeBinary(bytes(m.binary), sb);
    const j = decodeJson(m.json, sj);
    if (b.type !== "quote") continue;
    for (const d of [b, j]) assert.deepEqual([d.bidSz, d.askSz].map((x) => x === null), [d.bidSize === null, d.askSize === null]);
    sizes.push([b.symbol, b.bidSize, b.askSize]);
  }
  // TC0: the bid's unknown (flags 1), TC1: both (flags 3), TC2: zeros.
  assert.deepEqual(sizes.slice(-3), [
    ["BTCUSDT", null, "1.54698000"],
    ['X"Y/é', null, null],
    ["EDGE", "0.000", "0.000"],
  ]);
  assert.deepEqual(
    fixture.messages.filter((m) => m.expect.type === "quote").map((m) => bytes(m.binary)[2]),
    [0, 0, 1, 3, 0],
  );
});

test("a quote with flags this version does not define is refused", () => {
  const symbols = new Map();
  for (const m of fixture.messages.filter((m) => m.expect.type === "symbol")) decodeBinary(bytes(m.binary), symbols);
  const quote = bytes(fixture.messages.find((m) => m.expect.type === "quote").binary);
  quote[2] = 4;
  assert.throws(() => decodeBinary(quote, symbols), /flags 0x4/);
});

test("formatFixed places the point in the digits", () => {
  for (const [m, d, want] of [
    [6183763000000n, 8, "61837.63000000"],
    [5n, 8, "0.00000005"],
    [-5n, 4, "-0.0005"],
    [0n, 2, "0.00"],
    [150n, 0, "150"],
    [-1n, 0, "-1"],
    [9223372036854775807n, 4, "922337203685477.5807"],
    [-9223372036854775808n, 3, "-9223372036854775.808"],
  ]) {
    assert.equal(formatFixed(m, d), want);
    assert.equal(parseFixed(want, d), m);
  }
  assert.equal(parseFixed("1.5", 8), 150000000n);
  assert.throws(() => parseFixed("1.123", 2));
});

test("the client keeps which symbols are stale, in order with the data", () => {
  // No connection: the fixture's frames are handed to the client as if
  // they had arrived, in the fixture's order (definitions, updates, then
  // BTCUSDT stale for a gap, stale disconnected, X"Y/é stale silent,
  // BTCUSDT live).
  const client = new TickwireClient({ url: "http://127.0.0.1:9", symbols: ["*"] });
  const events = [];
  client.addEventListener("symbolstatus", (e) => events.push(`${e.detail.symbol} ${e.detail.state} ${e.detail.reason}`));
  const seen = [];
  for (const m of fixture.messages) {
    client._handle(bytes(m.binary).buffer, 0);
    seen.push(new Map(client.stale));
  }
  assert.deepEqual(events, [
    "BTCUSDT stale gap",
    "BTCUSDT stale disconnected",
    'X"Y/é stale silent',
    "BTCUSDT live null",
  ]);
  assert.deepEqual([...client.stale], [['X"Y/é', "silent"]]);
  // Stale from the first status on, not before.
  const first = fixture.messages.findIndex((m) => m.expect.type === "status");
  assert.equal(seen[first - 1].size, 0);
  assert.equal(seen[first].get("BTCUSDT"), "gap");
});

test("the client keeps a local book: a snapshot, changes in sequence, a gap asks again", () => {
  const client = new TickwireClient({ url: "http://127.0.0.1:9" });
  client._handle('{"type":"symbol","id":1,"symbol":"A","price_decimals":1,"size_decimals":0}', 0);
  client.watchBook("A", "book");
  const books = [];
  const gaps = [];
  client.addEventListener("book", (e) => books.push(e.detail));
  client.addEventListener("gap", (e) => gaps.push(e.detail));
  const msg = (channel, bookSeq, snapshot, bids, asks) =>
    JSON.stringify({
      type: "book", symbol: "A", channel, id: 1, seq: 100 + bookSeq, book_seq: bookSeq,
      exchange_ts: 0, receive_ts: 0, publish_ts: 0, snapshot, bids, asks,
    });
  // TC0: a snapshot, then changes applied in price order, best first.
  client._handle(msg("book", 1, true, [["10.0", "1"], ["9.0", "2"]], [["11.0", "3"]]), 0);
  client._handle(msg("book", 2, false, [["10.0", "0"], ["9.5", "4"]], [["10.5", "1"]]), 0);
  assert.deepEqual(client.book.bids, [["9.5", "4"], ["9.0", "2"]]);
  assert.deepEqual(client.book.asks, [["10.5", "1"], ["11.0", "3"]]);
  assert.deepEqual([...books[1].changed].sort(), ["a:10.5", "b:9.5"]);
  // TC1: another channel or symbol is not this book.
  client._handle(msg("book.5", 3, true, [["1.0", "1"]], []), 0);
  assert.equal(client.book.bookSeq, 2);
  // TC2: a change that skips one drops the book and reports a gap.
  client._handle(msg("book", 4, false, [["9.0", "0"]], []), 0);
  assert.equal(client.book, null);
  assert.equal(gaps.length, 1);
  // TC3: an older snapshot never replaces a newer book.
  client._handle(msg("book", 9, true, [["9.0", "2"]], []), 0);
  client._handle(msg("book", 8, true, [["8.0", "2"]], []), 0);
  assert.deepEqual(client.book.bids, [["9.0", "2"]]);
});

test("the client keeps the followed candles: a snapshot, changes and closes merged by start, a reset replaces", () => {
  const client = new TickwireClient({ url: "http://127.0.0.1:9", candleInterval: "1s" });
  client._handle('{"type":"symbol","id":1,"symbol":"A","price_decimals":1,"size_decimals":0}', 0);
  client.watchBook("A", "book.10");
  const events = [];
  client.addEventListener("candles", (e) => events.push(e.detail));
  const bar = (s, close, trades, closed) => ({ start_ts: s * 1e9, open: "1.0", high: "2.0", low: "0.5", close, volume: String(trades), trades, closed });
  const head = (type, interval, seq) => ({
    type, symbol: "A", channel: `candles.${interval}`, interval, id: 1, seq: 100 + seq, candle_seq: seq,
    exchange_ts: 0, receive_ts: 0, publish_ts: 0,
  });
  const candles = (interval, seq, snapshot, bars) => JSON.stringify({ ...head("candles", interval, seq), snapshot, bars });
  const candle = (interval, seq, b) => JSON.stringify({ ...head("candle", interval, seq), ...b });
  const shown = () => client.candles.bars.map((b) => [b.startMs / 1000, b.close, b.trades, b.closed]);
  // TC0: the snapshot, then the open bar changes, closes, and a new one opens.
  client._handle(candles("1s", 3, true, [bar(10, "1.5", 2, true), bar(11, "1.6", 1, false)]), 0);
  client._handle(candle("1s", 4, bar(11, "1.7", 2, false)), 0);
  client._handle(candle("1s", 5, bar(11, "1.7", 2, true)), 0);
  client._handle(candle("1s", 6, bar(12, "1.8", 1, false)), 0);
  assert.deepEqual(shown(), [[10, "1.5", 2, true], [11, "1.7", 2, true], [12, "1.8", 1, false]]);
  assert.equal(events.length, 4);
  // TC1: another interval, or another symbol, is not the followed series.
  assert.equal(client._handle(candle("1m", 7, bar(0, "9.9", 1, false)), 0), false);
  assert.equal(shown().length, 3);
  // TC2: a catch-up (not a snapshot) merges what closed while behind.
  client._handle(candles("1s", 9, false, [bar(12, "1.9", 3, true), bar(13, "2.0", 1, false)]), 0);
  assert.deepEqual(shown().slice(2), [[12, "1.9", 3, true], [13, "2.0", 1, false]]);
  // TC3: a snapshot (a replay that started over) replaces the series.
  client._handle(candles("1s", 10, true, [bar(10, "1.1", 1, false)]), 0);
  assert.deepEqual(shown(), [[10, "1.1", 1, false]]);
  // TC4: another interval starts a new series.
  client.watchCandles("1m");
  assert.equal(client.candles, null);
  client._handle(candles("1m", 2, true, [bar(0, "1.2", 5, false)]), 0);
  assert.deepEqual(shown(), [[0, "1.2", 5, false]]);
});
