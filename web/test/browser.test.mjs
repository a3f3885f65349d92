// The dashboard in a real browser (Debian's Chromium, driven by
// playwright-core) against a real tickwire replaying the bundled recording.
// Prices on the page are checked against the recording itself, decoded here
// independently of the server: every bid/ask the grid shows must be a pair
// that the recording holds for that symbol, digit for digit.
//
// Needs a tickwire binary (TICKWIRE_BIN, default target/debug/tickwire)
// and /usr/bin/chromium; scripts/test-web provides both.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, readdirSync, mkdirSync, existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { gunzipSync } from "node:zlib";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { once } from "node:events";
import http from "node:http";
import { chromium } from "playwright-core";
import { formatFixed, parseFixed } from "../tickwire.js";
import { trimDecimals, usedDecimals } from "../grid.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const FEED = join(ROOT, "feeds", readdirSync(join(ROOT, "feeds")).find((f) => f.endsWith(".jsonl.gz")));
const BIN = process.env.TICKWIRE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, "target"), "debug", "tickwire");
const SHOTS = join(ROOT, "docs", "screenshots");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

// ---- the recording, decoded here ----

/** symbol -> { quotes: Set("bid|ask"), trades: Set(price) }, raw strings. */
function recorded() {
  const out = new Map();
  const entry = (s) => out.get(s) ?? out.set(s, { quotes: new Set(), trades: new Set() }).get(s);
  for (const line of gunzipSync(readFileSync(FEED)).toString("utf8").split("\n")) {
    const space = line.indexOf(" ");
    if (space < 0) continue;
    const d = JSON.parse(line.slice(space + 1)).data;
    if (!d || typeof d.s !== "string") continue;
    if (typeof d.b === "string" && typeof d.a === "string") entry(d.s).quotes.add(`${d.b}|${d.a}`);
    else if (d.e === "trade" && typeof d.p === "string") entry(d.s).trades.add(d.p);
  }
  return out;
}
const RECORDING = recorded();

// The page shows a symbol's prices with the decimals it uses (the venue's
// trailing zeros cut); the recording has the venue's strings. Compare
// exactly, each without its trailing zeros.
const atDecimals = (text, d) => formatFixed(parseFixed(text, d), d);
const canon = (text) => trimDecimals(text, 0);
const decimalsOf = (shown) => (shown.includes(".") ? shown.length - shown.indexOf(".") - 1 : 0);

/** The most decimals any of `symbol`'s recorded prices uses. */
function recordedPriceDecimals(symbol) {
  const rec = RECORDING.get(symbol);
  let d = 0;
  for (const p of rec.quotes) for (const v of p.split("|")) d = Math.max(d, usedDecimals(v));
  for (const v of rec.trades) d = Math.max(d, usedDecimals(v));
  return d;
}

function assertRecordedQuote(row) {
  const rec = RECORDING.get(row.symbol);
  assert.ok(rec, `${row.symbol} is not in the recording`);
  const pairs = new Set([...rec.quotes].map((p) => p.split("|").map(canon).join("|")));
  assert.ok(pairs.has(`${canon(row.bid)}|${canon(row.ask)}`), `${row.symbol} shows ${row.bid} / ${row.ask}, not a recorded quote`);
  // One number of decimals across the row's prices, and no zeros the
  // venue never fills: never more than the recording's prices use.
  const d = decimalsOf(row.bid);
  assert.equal(decimalsOf(row.ask), d, `${row.symbol}: ${row.bid} / ${row.ask}`);
  assert.ok(d <= recordedPriceDecimals(row.symbol), `${row.symbol} shows ${row.bid}: more decimals than the venue uses`);
  if (row.last !== "—") {
    const trades = new Set([...rec.trades].map(canon));
    assert.ok(trades.has(canon(row.last)), `${row.symbol} shows last trade ${row.last}, not a recorded trade`);
    assert.equal(decimalsOf(row.last), d, `${row.symbol}: last ${row.last}, bid ${row.bid}`);
  }
}

// ---- the server ----

let server;
let port = 0;

async function startServer() {
  const { child, port: bound } = await spawnServer(FEED, ["--speed", "1", "--loop"], port);
  port = bound;
  return child;
}

/** `tickwire serve --feed feed ...args` on `listenPort` (0: any). */
async function spawnServer(feed, args, listenPort) {
  const child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${listenPort}`, "--feed", feed, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  let out = "";
  child.stdout.setEncoding("utf8");
  const addr = await new Promise((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = /serving on http:\/\/([\d.]+):(\d+)\//.exec(out);
      if (m) resolve(Number(m[2]));
    });
    child.once("exit", (code) => reject(new Error(`tickwire exited (${code}) before listening: ${out}`)));
  });
  return { child, port: addr };
}

async function stopServer() {
  if (!server || server.exitCode !== null) return;
  server.kill("SIGTERM");
  await once(server, "exit");
}

// ---- the browser ----

let browser;

before(async () => {
  assert.ok(existsSync(BIN), `no tickwire binary at ${BIN}: run cargo build (scripts/test-web does)`);
  assert.ok(existsSync(CHROMIUM), `no ${CHROMIUM}: apt-get install chromium (scripts/test-web does)`);
  mkdirSync(SHOTS, { recursive: true });
  server = await startServer();
  // A fresh profile per run is playwright's own temporary user-data-dir.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await stopServer();
});

async function newPage(query = "", at = port) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 820 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`http://127.0.0.1:${at}/${query}`);
  return page;
}

/** The grid as the user sees it. */
const gridRows = (page) =>
  page.$$eval("#rows tr", (trs) =>
    trs.map((tr) => ({
      symbol: tr.cells[0].textContent,
      bid: tr.cells[1].textContent,
      ask: tr.cells[2].textContent,
      last: tr.cells[4].textContent,
    })),
  );

async function waitForPrices(page, symbols) {
  await page.waitForFunction(
    (want) => {
      const shown = [...document.querySelectorAll("#rows tr")].filter((tr) => tr.cells[1].textContent !== "—");
      return want.every((s) => shown.some((tr) => tr.dataset.symbol === s));
    },
    symbols,
    { timeout: 15_000 },
  );
}

const status = (page) => page.$eval("#s-state b", (b) => b.textContent);

async function waitForChange(page, before) {
  await page.waitForFunction(
    (prev) => [...document.querySelectorAll("#rows tr")].some((tr) => prev[tr.dataset.symbol] !== undefined && prev[tr.dataset.symbol] !== tr.cells[1].textContent),
    Object.fromEntries(before.map((r) => [r.symbol, r.bid])),
    { timeout: 15_000 },
  );
}

const ALL = [...RECORDING.keys()].sort();

test("the grid shows every recorded symbol at recorded prices, and moves", async () => {
  const page = await newPage();
  await waitForPrices(page, ALL);
  const first = await gridRows(page);
  assert.deepEqual(first.map((r) => r.symbol).sort(), ALL);
  first.forEach(assertRecordedQuote);
  assert.equal(await status(page), "live");
  assert.equal(await page.textContent("#s-proto"), "tickwire.v1");
  await waitForChange(page, first);
  // Long enough for trades, sparklines and the chart to fill in.
  await page.waitForTimeout(4000);
  (await gridRows(page)).forEach(assertRecordedQuote);
  const rate = Number((await page.textContent("#s-rate")).replace(/,/g, ""));
  assert.ok(rate > 0, "messages/s shows traffic");
  assert.match(await page.textContent("#s-p50"), /ms$/);
  await page.screenshot({ path: join(SHOTS, "dashboard.png") });
  await page.context().close();
});

test("search subscribes and unsubscribes live; watchlist and selection survive a reload", async () => {
  const page = await newPage();
  await waitForPrices(page, ALL);
  await page.hover('#rows tr[data-symbol="ETHUSDT"]');
  await page.click('#rows tr[data-symbol="ETHUSDT"] td.x button.unsub');
  await page.waitForSelector('#rows tr[data-symbol="ETHUSDT"]', { state: "detached" });
  const updatesBefore = await page.evaluate(() => window.tickwire.messages);
  await page.waitForTimeout(1500);
  // Still receiving the others, but no row for ETHUSDT comes back by itself.
  assert.ok((await page.evaluate(() => window.tickwire.messages)) > updatesBefore);
  assert.equal(await page.$('#rows tr[data-symbol="ETHUSDT"]'), null);
  assert.deepEqual(await page.evaluate(() => window.tickwire.subscriptions().sort()), ALL.filter((s) => s !== "ETHUSDT"));

  await page.fill("#search", "NOPE");
  await page.press("#search", "Enter");
  await page.waitForFunction(() => document.getElementById("notice").textContent.includes("unknown symbol"));

  await page.fill("#search", "ETHUSDT");
  await page.press("#search", "Enter");
  await waitForPrices(page, ["ETHUSDT"]);
  (await gridRows(page)).forEach(assertRecordedQuote);

  await page.click('#rows tr[data-symbol="BTCUSD_PERP"] td.sym');
  assert.equal(await page.textContent("#d-symbol"), "BTCUSD_PERP");
  await page.reload();
  await waitForPrices(page, ALL);
  assert.equal(await page.textContent("#d-symbol"), "BTCUSD_PERP");
  assert.ok(await page.$('#rows tr[data-symbol="BTCUSD_PERP"].selected'));
  assert.deepEqual(await page.evaluate(() => window.tickwire.subscriptions().sort()), ALL);
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(SHOTS, "search-and-selection.png") });
  await page.context().close();
});

test("a server restart shows reconnecting, then live data again", async () => {
  const page = await newPage();
  await waitForPrices(page, ALL);
  await stopServer();
  await page.waitForFunction(() => document.querySelector("#s-state b").textContent === "reconnecting", null, { timeout: 10_000 });
  await page.screenshot({ path: join(SHOTS, "reconnecting.png") });
  server = await startServer(); // the same port
  await page.waitForFunction(() => document.querySelector("#s-state b").textContent === "live", null, { timeout: 15_000 });
  const after = await gridRows(page);
  await waitForChange(page, after);
  (await gridRows(page)).forEach(assertRecordedQuote);
  assert.equal(await page.textContent("#s-proto"), "tickwire.v1");
  await page.context().close();
});

test("with the WebSocket blocked, the SSE fallback delivers the same prices and candles", async () => {
  const page = await newPage("?ws=/blocked&symbol=ETHUSDT&interval=1s");
  await waitForPrices(page, ALL);
  assert.equal(await status(page), "live");
  assert.match(await page.textContent("#s-proto"), /^sse/);
  const first = await gridRows(page);
  first.forEach(assertRecordedQuote);
  await waitForChange(page, first);
  (await gridRows(page)).forEach(assertRecordedQuote);
  // The candles come on the second stream, with the book.
  await assertClosedBarRecorded(page, "ETHUSDT");
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(SHOTS, "sse-fallback.png") });
  await page.context().close();
});

test("with WebSocket and SSE refused, long-polling delivers the same prices, the ladder and candles", async () => {
  const page = await newPage("?ws=/blocked&sse=/blocked&symbol=BTCUSDT&interval=1s");
  await waitForPrices(page, ALL);
  assert.equal(await status(page), "live");
  assert.match(await page.textContent("#s-proto"), /^poll/);
  const first = await gridRows(page);
  first.forEach(assertRecordedQuote);
  await waitForChange(page, first);
  (await gridRows(page)).forEach(assertRecordedQuote);
  // The ladder comes over a second poll loop.
  await page.waitForFunction(() => document.querySelectorAll("#ladder-rows td[data-price]").length >= 20, null, { timeout: 15_000 });
  await assertClosedBarRecorded(page, "BTCUSDT");
  // What a poll skips is the newest-of rule, not a gap.
  assert.equal(await page.evaluate(() => window.tickwire.gaps), 0);
  await page.context().close();
});

/**
 * A proxy in front of tickwire that breaks streaming the way some
 * corporate proxies do: it refuses WebSocket upgrades and buffers every
 * response whole before passing it on (an event stream never ends, so it
 * never arrives); whole responses (the page, /poll) pass.
 */
async function bufferingProxy(upstreamPort) {
  const proxy = http.createServer((req, res) => {
    const up = http.request({ host: "127.0.0.1", port: upstreamPort, path: req.url, method: req.method, headers: req.headers }, (r) => {
      const chunks = [];
      r.on("data", (c) => chunks.push(c));
      r.on("end", () => {
        res.writeHead(r.statusCode, r.headers);
        res.end(Buffer.concat(chunks));
      });
    });
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  proxy.on("upgrade", (req, socket) => socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"));
  proxy.listen(0, "127.0.0.1");
  await once(proxy, "listening");
  return proxy;
}

test("behind a proxy that refuses upgrades and buffers the event stream, the page falls back to long-polling", async () => {
  const proxy = await bufferingProxy(port);
  try {
    const page = await newPage("?sseTimeout=1500", proxy.address().port);
    await waitForPrices(page, ALL);
    assert.match(await page.textContent("#s-proto"), /^poll/);
    const first = await gridRows(page);
    first.forEach(assertRecordedQuote);
    await waitForChange(page, first);
    (await gridRows(page)).forEach(assertRecordedQuote);
    await page.context().close();
  } finally {
    proxy.closeAllConnections();
    proxy.close();
  }
});

test("a size the venue did not send shows as —, and a real zero as 0", async () => {
  // Coinbase tickers without sizes (tests/data/coinbase-sizes-unknown.jsonl),
  // replayed to the end: the page gets the last quote of each symbol.
  const feed = join(ROOT, "tests", "data", "coinbase-sizes-unknown.jsonl");
  const other = await spawnServer(feed, ["--speed", "max"], 0);
  try {
    for (const [transport, query] of [["websocket", ""], ["sse", "&transport=sse"]]) {
      const page = await newPage(`?symbol=LTC-USD${query}`, other.port);
      await waitForPrices(page, ["LTC-USD", "SOL-USD", "DOGE-USD"]);
      const detail = async (symbol) => {
        await page.click(`#rows tr[data-symbol="${symbol}"] td.sym`);
        await page.waitForFunction((s) => document.getElementById("d-symbol").textContent === s, symbol);
        return page.evaluate(() => ["d-bid", "d-bidsz", "d-ask", "d-asksz"].map((id) => document.getElementById(id).textContent));
      };
      // TC0: neither size (Exchange ticker); TC1: a real zero bid size;
      // TC2: no bid size (Advanced Trade ticker).
      // Sizes at the decimals the symbol's sizes use (SOL-USD's: one).
      assert.deepEqual(await detail("LTC-USD"), ["61.83", "× —", "61.85", "× —"], transport);
      assert.equal(await page.getAttribute("#d-bidsz", "title"), "size unknown: the venue did not send it");
      assert.deepEqual(await detail("SOL-USD"), ["31.21", "× 0.0", "31.23", "× 12.5"], transport);
      assert.equal(await page.getAttribute("#d-bidsz", "title"), "");
      assert.deepEqual(await detail("DOGE-USD"), ["0.1233", "× —", "0.1235", "× 1500.5"], transport);
      if (transport === "websocket") await page.screenshot({ path: join(SHOTS, "size-unknown.png") });
      await page.context().close();
    }
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
  }
});

// ---- the books of the recording, rebuilt here ----

/**
 * symbol -> Set of the top-10 states its book passes through, each as
 * "bids|asks" with levels "price:size" best first, synchronized the way
 * Binance documents (buffer diffs, drop what the REST snapshot covers, the
 * first diff straddles it, then continuity: spot U = u + 1, futures
 * pu = u), with its own parsing.
 */
function recordedBooks(depth, feed = FEED) {
  const books = new Map();
  const book = (s) => books.get(s) ?? books.set(s, { waiting: [], bids: new Map(), asks: new Map(), last: null, lastId: null, first: true, states: new Set() }).get(s);
  const num = (t) => Number(t);
  const top = (b) => {
    const side = (m, desc) =>
      [...m.entries()]
        .sort((x, y) => (desc ? num(y[0]) - num(x[0]) : num(x[0]) - num(y[0])))
        .slice(0, depth)
        .map(([p, q]) => `${p}:${q}`)
        .join(",");
    b.last = `${side(b.bids, true)}|${side(b.asks, false)}`;
    b.states.add(b.last);
  };
  const set = (b, bids, asks) => {
    for (const [m, list] of [[b.bids, bids], [b.asks, asks]]) {
      for (const [p, q] of list) if (num(q) === 0) m.delete(p); else m.set(p, q);
    }
  };
  const apply = (b, d) => {
    const futures = d.pu !== undefined;
    if (b.first) {
      if (d.u < b.lastId || (!futures && d.u === b.lastId)) return;
      const l = futures ? b.lastId : b.lastId + 1;
      assert.ok(d.U <= l && l <= d.u, "the first diff straddles the snapshot");
    } else {
      assert.ok(futures ? d.pu === b.lastId : d.U === b.lastId + 1, "diffs follow each other");
    }
    b.first = false;
    b.lastId = d.u;
    set(b, d.b, d.a);
    if (d.b.length || d.a.length) top(b);
  };
  const raw = readFileSync(feed);
  const text = (feed.endsWith(".gz") ? gunzipSync(raw) : raw).toString("utf8");
  for (const line of text.split("\n")) {
    const space = line.indexOf(" ");
    if (space < 0) continue;
    const j = JSON.parse(line.slice(space + 1));
    const d = j.data ?? j;
    if (d.lastUpdateId !== undefined) {
      // A snapshot names no symbol (but COIN-M's): the waiting book whose
      // diffs are numbered nearest.
      const name =
        d.symbol ??
        [...books.entries()]
          .filter(([, b]) => b.waiting.length)
          .sort(([, x], [, y]) => Math.abs(x.waiting.at(-1).u - d.lastUpdateId) - Math.abs(y.waiting.at(-1).u - d.lastUpdateId))[0][0];
      const b = book(name);
      b.bids.clear();
      b.asks.clear();
      set(b, d.bids, d.asks);
      b.lastId = d.lastUpdateId;
      b.first = true;
      top(b);
      for (const w of b.waiting.splice(0)) apply(b, w);
    } else if (d.e === "depthUpdate") {
      const b = book(d.s);
      if (b.lastId === null) b.waiting.push(d);
      else apply(b, d);
    }
  }
  return books;
}

test("the depth ladder shows the selected symbol's top levels exactly as the recording's book", async () => {
  const books = recordedBooks(10);
  assert.deepEqual([...books.keys()].sort(), ALL);
  // The third run forces the SSE fallback: the book comes on a second stream.
  for (const [symbol, query] of [["BTCUSDT", ""], ["BTCUSD_PERP", ""], ["ETHUSDT", "&ws=/blocked"]]) {
    const page = await newPage(`?symbol=${symbol}${query}`);
    const states = books.get(symbol).states;
    const seen = new Set();
    for (let i = 0; i < 5; i++) {
      await page.waitForFunction(() => document.querySelectorAll("#ladder-rows td[data-price]").length >= 20, null, { timeout: 15_000 });
      // Rows and title in one read: drawLadder writes both in one task,
      // and two reads could straddle a redraw of a moving book.
      const [ladder, meta] = await page.evaluate(() => [
        [...document.querySelectorAll("#ladder-rows tr")].map((tr) =>
          [...tr.querySelectorAll("td")].map((td) => td.dataset.price ?? td.dataset.size ?? ""),
        ),
        document.getElementById("book-meta").textContent,
      ]);
      // Rows are [bid size, bid, ask, ask size].
      const bids = ladder.filter((r) => r[1]).map((r) => [r[1], r[0]]);
      const asks = ladder.filter((r) => r[2]).map((r) => [r[2], r[3]]);
      const d = decimalsOf(bids[0][0]);
      const sd = decimalsOf(bids[0][1]);
      // The recording's state at the page's decimals.
      const key = (side) => side.map(([p, q]) => `${p}:${q}`).join(",");
      const shown = `${key(bids)}|${key(asks)}`;
      const match = [...states].some((s) => {
        const [b, a] = s.split("|").map((side) => side.split(",").map((l) => l.split(":")).map(([p, q]) => `${atDecimals(p, d)}:${atDecimals(q, sd)}`).join(","));
        return `${b}|${a}` === shown;
      });
      assert.ok(match, `${symbol}: the ladder ${shown} is not a state of the recording's book`);
      // The spread, exactly: best ask minus best bid.
      const spread = formatFixed(parseFixed(asks[0][0], d) - parseFixed(bids[0][0], d), d);
      const m = /^spread ([\d.]+) · book_seq \d+$/.exec(meta);
      assert.ok(m, meta);
      assert.equal(canon(m[1]), canon(spread), meta);
      seen.add(shown);
      await page.waitForTimeout(700);
    }
    assert.ok(seen.size > 1, `${symbol}: the ladder moved (${seen.size} states seen)`);
    if (query) assert.match(await page.textContent("#s-proto"), /^sse/);
    if (symbol === "BTCUSDT") {
      await page.screenshot({ path: join(SHOTS, "depth-ladder.png") });
      // Chromium offers permessage-deflate and the server takes it: the
      // ladder above came in compressed book frames.
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^tickwire_deflate_connections [1-9]/m);
    }
    await page.context().close();
  }
});

test("a venue with depth and no best bid and offer fills its row from the book", async () => {
  // The USD-M excerpt without its bookTicker lines: only the book says
  // where the market is.
  const src = join(ROOT, "tests", "data", "binance-usdm-BTCUSDT-20240808-head300.jsonl.gz");
  const lines = gunzipSync(readFileSync(src)).toString("utf8").split("\n").filter((l) => !l.includes("@bookTicker"));
  const dir = mkdtempSync(join(tmpdir(), "tickwire-depth-only-"));
  const feed = join(dir, "depth-only.jsonl");
  writeFileSync(feed, lines.join("\n"));
  const book = recordedBooks(1, feed).get("BTCUSDT");
  const [bid, ask] = book.last.split("|").map((side) => side.split(":")[0]);
  const other = await spawnServer(feed, ["--speed", "max"], 0);
  try {
    const page = await newPage("?symbol=BTCUSDT", other.port);
    await waitForPrices(page, ["BTCUSDT"]);
    const row = (await gridRows(page)).find((r) => r.symbol === "BTCUSDT");
    assert.deepEqual([canon(row.bid), canon(row.ask)], [canon(bid), canon(ask)]);
    assert.equal(canon(await page.textContent("#d-bid")), canon(bid));
    await page.context().close();
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Quotes per symbol the page's client takes in `ms`. */
const quotesPerSymbol = (page, ms) =>
  page.evaluate(
    (ms) =>
      new Promise((resolve) => {
        const n = {};
        const on = (ev) => (n[ev.detail.symbol] = (n[ev.detail.symbol] ?? 0) + 1);
        window.tickwire.addEventListener("quote", on);
        setTimeout(() => {
          window.tickwire.removeEventListener("quote", on);
          resolve(n);
        }, ms);
      }),
    ms,
  );

/**
 * The recording's bars of `symbol` at `seconds`, computed here from its
 * trade lines: start ms -> the JSON the page keeps for a closed bar
 * ([start, open, high, low, close, volume, trades], prices at `d` and
 * sizes at `sd` decimals).
 */
function recordedBars(symbol, seconds, d, sd) {
  const bars = new Map();
  for (const line of gunzipSync(readFileSync(FEED)).toString("utf8").split("\n")) {
    const space = line.indexOf(" ");
    if (space < 0) continue;
    const t = JSON.parse(line.slice(space + 1)).data;
    if (!t || t.s !== symbol || (t.e !== "trade" && t.e !== "aggTrade")) continue;
    const ms = t.T ?? t.E;
    const start = ms - (ms % (seconds * 1000));
    const [px, sz] = [parseFixed(t.p, d), parseFixed(t.q, sd)];
    const b = bars.get(start);
    if (!b) bars.set(start, { o: px, h: px, l: px, c: px, v: sz, n: 1 });
    else Object.assign(b, { h: px > b.h ? px : b.h, l: px < b.l ? px : b.l, c: px, v: b.v + sz, n: b.n + 1 });
  }
  const f = (m) => formatFixed(m, d);
  return new Map([...bars].map(([k, b]) => [k, JSON.stringify([k, f(b.o), f(b.h), f(b.l), f(b.c), formatFixed(b.v, sd), b.n])]));
}

/** Waits for the page's candle chart to have a closed 1s bar, and checks it is the recording's. */
async function assertClosedBarRecorded(page, symbol) {
  await page.waitForFunction(() => document.getElementById("candles").dataset.lastClosed, null, { timeout: 20_000 });
  const closed = await page.$eval("#candles", (c) => c.dataset.lastClosed);
  const last = JSON.parse(closed);
  assert.equal(closed, recordedBars(symbol, 1, decimalsOf(last[1]), decimalsOf(last[5])).get(last[0]), `${symbol}: the last closed 1s bar`);
}

test("the candle chart shows the selected symbol's bars, each closed one exactly the recording's; the interval picker switches", async () => {
  const page = await newPage("?symbol=BTCUSDT&interval=1s");
  const candles = () => page.$eval("#candles", (c) => ({ ...c.dataset }));
  const seen = new Set();
  for (let i = 0; i < 4; i++) {
    await page.waitForFunction(() => {
      const c = document.getElementById("candles");
      return c.dataset.lastClosed && Number(c.dataset.bars) >= 2;
    }, null, { timeout: 20_000 });
    const c = await candles();
    const last = JSON.parse(c.lastClosed);
    const ref = recordedBars("BTCUSDT", 1, decimalsOf(last[1]), decimalsOf(last[5]));
    assert.equal(c.lastClosed, ref.get(last[0]), "the last closed 1s bar is the recording's");
    // Bars in time order, on whole seconds.
    const starts = c.starts.split(",").map(Number);
    assert.ok(starts.every((s, k) => s % 1000 === 0 && (k === 0 || s > starts[k - 1])), c.starts);
    seen.add(last[0]);
    await page.waitForTimeout(1200);
  }
  assert.ok(seen.size > 1, `bars closed as the replay went on (${seen.size} seen)`);
  assert.match(await page.textContent("#candle-meta"), /^(open|closed) \d\d:\d\d:\d\d UTC · O \d+(\.\d+)? H /);
  await page.screenshot({ path: join(SHOTS, "candles.png") });
  // The picker: 1m bars, on whole minutes; kept across a reload.
  await page.click('#intervals button[data-interval="1m"]');
  const minute = () => {
    const c = document.getElementById("candles");
    return c.dataset.interval === "1m" && Number(c.dataset.bars) >= 1;
  };
  await page.waitForFunction(minute, null, { timeout: 20_000 });
  const starts = (await candles()).starts.split(",").map(Number);
  assert.ok(starts.every((s) => s % 60_000 === 0), `1m bars start on minutes: ${starts}`);
  assert.equal(await page.getAttribute('#intervals button[data-interval="1m"]', "aria-pressed"), "true");
  await page.goto(`http://127.0.0.1:${port}/?symbol=BTCUSDT`);
  await page.waitForFunction(minute, null, { timeout: 20_000 });
  await page.context().close();
});

test("the grid is throttled to 50 ms a symbol, the selected symbol comes at full rate", async () => {
  // 4 symbols at 1,000 quotes and trades a second each.
  const other = await spawnServer("synthetic:symbols=4,rate=4000", [], 0);
  try {
    const page = await newPage("?symbol=SYN0000", other.port);
    await waitForPrices(page, ["SYN0000", "SYN0001", "SYN0002", "SYN0003"]);
    for (const [selected, click] of [["SYN0000", null], ["SYN0002", "SYN0002"]]) {
      if (click) {
        await page.click(`#rows tr[data-symbol="${click}"]`);
        await page.waitForFunction((s) => window.tickwire.bookWatch?.symbol === s, click);
        await page.waitForTimeout(300);
      }
      const gapsBefore = await page.evaluate(() => window.tickwire.gaps);
      const n = await quotesPerSymbol(page, 2000);
      for (const s of ["SYN0000", "SYN0001", "SYN0002", "SYN0003"]) {
        if (s === selected) {
          assert.ok(n[s] > 400, `${s} (selected): ${n[s]} quotes in 2 s`);
        } else {
          // At most one per 50 ms (and two intervals' slack), not none.
          assert.ok(n[s] <= 44 && n[s] >= 10, `${s}: ${n[s]} quotes in 2 s`);
        }
      }
      // What a throttle skips is not a gap.
      assert.equal(await page.evaluate(() => window.tickwire.gaps), gapsBefore);
    }
    assert.ok((await page.evaluate(() => window.tickwire.throttledSkips)) > 1000);
    await page.context().close();
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
  }
});

/** A counter's value in a Prometheus text exposition (0 if absent). */
function metric(text, name) {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : 0;
}

/**
 * A synthetic market of `symbols` recorded for `ms` to a log (removed by
 * the caller): served at `--speed max` it ends, and the page's values
 * stand still.
 */
async function recordSynthetic(symbols, ms) {
  const dir = mkdtempSync(join(tmpdir(), "tickwire-market-"));
  const log = join(dir, "market.twlog");
  const rec = spawn(BIN, ["record", "--feed", `synthetic:symbols=${symbols},rate=${symbols * 20}`, "--out", log, "--flush-ms", "50"], {
    stdio: "ignore",
    env: { ...process.env, RUST_LOG: "warn" },
  });
  await new Promise((resolve) => setTimeout(resolve, ms));
  rec.kill("SIGTERM");
  await once(rec, "exit");
  return { dir, log };
}

test("the grid at market scale: only the rows in view are in the page; sort, filter, watchlist and the keyboard", async () => {
  const { dir, log } = await recordSynthetic(300, 2500);
  // Replayed once the page subscribes, in under a second; then the values
  // stand still.
  const other = await spawnServer(log, ["--speed", "4", "--min-subscribers", "1"], 0);
  try {
    const page = await newPage("?symbol=SYN0000", other.port);
    await page.waitForFunction(() => document.getElementById("grid-count").textContent === "300 of 300", null, { timeout: 20_000 });
    // Every symbol has its last quote, and the log has ended.
    await page.waitForFunction(() => [...window.dashboard.rows.values()].every((r) => r.bid !== null), null, { timeout: 20_000 });
    await page.waitForTimeout(2000);
    const domRows = () => page.$$eval("#rows tr", (trs) => trs.map((tr) => tr.dataset.symbol));
    const inView = await domRows();
    assert.ok(inView.length >= 10 && inView.length < 80, `${inView.length} rows in the DOM for 300 symbols`);
    assert.deepEqual(inView.slice(0, 3), ["SYN0000", "SYN0001", "SYN0002"]);

    // Sorted by change %, largest first, then smallest first: the order
    // the model's exact values give, and the last rows reachable by End.
    const pctOf = (text) => Number(text.replace("%", ""));
    const expected = (dir) =>
      page.evaluate((dir) => {
        // Symbols without a trade have no change: last either way.
        const rows = [...window.dashboard.rows.values()];
        const pct = (r) => (r.lastPx === null ? null : Number(r.lastPx - r.openPx) / Number(r.openPx));
        const order = (a, b) => {
          const [x, y] = [pct(a), pct(b)];
          if (x === y) return a.name < b.name ? -1 : 1;
          if (x === null) return 1;
          if (y === null) return -1;
          return (x < y ? -1 : 1) * dir;
        };
        return rows.sort(order).map((r) => r.name);
      }, dir);
    await page.click('th[data-sort="pct"]');
    assert.equal(await page.getAttribute('th[data-sort="pct"]', "aria-sort"), "descending");
    await page.waitForFunction((want) => document.querySelector("#rows tr")?.dataset.symbol === want, (await expected(-1))[0]);
    const top = await gridRows(page);
    const topPct = await page.$$eval("#rows tr", (trs) => trs.map((tr) => tr.cells[6].textContent));
    const want = await expected(-1);
    assert.deepEqual(top.map((r) => r.symbol), want.slice(0, top.length));
    // Shown to two decimals (truncated), the order holds as shown too.
    for (let i = 1; i < topPct.length; i++) assert.ok(pctOf(topPct[i]) <= pctOf(topPct[i - 1]), `${topPct[i - 1]} then ${topPct[i]}`);
    await page.click('th[data-sort="pct"]');
    assert.equal(await page.getAttribute('th[data-sort="pct"]', "aria-sort"), "ascending");
    await page.waitForFunction((want) => document.querySelector("#rows tr")?.dataset.symbol === want, (await expected(1))[0]);
    // End: the cursor on the last row, scrolled into view.
    await page.keyboard.press("End");
    const last = (await expected(1)).at(-1);
    await page.waitForFunction((last) => [...document.querySelectorAll("#rows tr")].some((tr) => tr.dataset.symbol === last && tr.classList.contains("cursor")), last);

    // "/" to the filter; the rows whose names hold it; arrows and Enter select.
    await page.click('th[data-sort="sym"]');
    await page.keyboard.press("/");
    assert.equal(await page.evaluate(() => document.activeElement.id), "filter");
    await page.keyboard.type("syn001");
    await page.waitForFunction(() => document.getElementById("grid-count").textContent === "10 of 300");
    assert.deepEqual(await domRows(), Array.from({ length: 10 }, (_, i) => `SYN001${i}`));
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowUp");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.getElementById("d-symbol").textContent === "SYN0011");
    assert.ok(await page.$('#rows tr[data-symbol="SYN0011"].selected'));

    // The watchlist: starred rows, shown alone, kept across a reload.
    for (const s of ["SYN0013", "SYN0017"]) {
      await page.hover(`#rows tr[data-symbol="${s}"]`);
      await page.click(`#rows tr[data-symbol="${s}"] button.star`);
    }
    await page.fill("#filter", "");
    await page.click("#starred-only");
    await page.waitForFunction(() => document.getElementById("grid-count").textContent === "2 of 300");
    assert.deepEqual(await domRows(), ["SYN0013", "SYN0017"]);
    await page.reload();
    await page.waitForFunction(() => document.getElementById("grid-count").textContent === "2 of 300", null, { timeout: 20_000 });
    assert.deepEqual(await domRows(), ["SYN0013", "SYN0017"]);
    assert.equal(await page.getAttribute("#starred-only", "aria-pressed"), "true");
    await page.context().close();
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("one clock at a time: trade times are the venue's, in UTC, and say so; the chart's and the status bar's are local", async () => {
  const page = await newPage("?symbol=BTCUSDT");
  await page.waitForFunction(() => document.querySelectorAll("#trades tr").length >= 3, null, { timeout: 20_000 });
  assert.equal(await page.textContent(".trades thead th:first-child"), "Venue time UTC");
  assert.equal(await page.textContent('th[data-sort="time"]'), "Trade UTC");
  // Each shown time is a recorded trade's own time (T), in UTC.
  const recorded = new Set();
  for (const line of gunzipSync(readFileSync(FEED)).toString("utf8").split("\n")) {
    const space = line.indexOf(" ");
    if (space < 0) continue;
    const d = JSON.parse(line.slice(space + 1)).data;
    if (d?.e === "trade" && d.s === "BTCUSDT") recorded.add(new Date(d.T).toISOString().slice(11, 23));
  }
  const shown = await page.$$eval("#trades tr", (trs) => trs.map((tr) => tr.cells[0].textContent));
  for (const t of shown) assert.ok(recorded.has(t), `${t} is not a recorded BTCUSDT trade time (UTC)`);
  const gridTime = await page.$eval('#rows tr[data-symbol="BTCUSDT"] td.time', (td) => td.textContent);
  assert.ok(gridTime === "—" || recorded.has(gridTime), gridTime);
  // The status bar's clock, from its first tick (a second in).
  await page.waitForFunction(() => /local \d\d:\d\d:\d\d/.test(document.querySelector(".status").textContent));
  await page.context().close();
});

test("at a phone's width: one column, the grid then the selected symbol, nothing wider than the screen", async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`http://127.0.0.1:${port}/?symbol=BTCUSDT`);
  await waitForPrices(page, ALL);
  (await gridRows(page)).forEach(assertRecordedQuote);
  const box = async (sel) => page.$eval(sel, (e) => e.getBoundingClientRect().toJSON());
  const [gridBox, detailBox] = [await box(".grid-panel"), await box("#detail")];
  assert.ok(detailBox.top >= gridBox.bottom, `the detail (top ${detailBox.top}) comes after the grid (bottom ${gridBox.bottom})`);
  assert.ok(Math.abs(detailBox.width - gridBox.width) < 2, "one column");
  assert.ok((await page.evaluate(() => document.documentElement.scrollWidth)) <= 390, "nothing wider than the screen");
  assert.equal(await page.$eval("#rows td.spread", (td) => getComputedStyle(td).display), "none");
  await page.tap('#rows tr[data-symbol="ETHUSDT"] td.sym');
  await page.waitForFunction(() => document.getElementById("d-symbol").textContent === "ETHUSDT");
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(SHOTS, "phone.png"), fullPage: true });
  await context.close();
});

test("a page that reads too slowly is conflated, which the status bar tells apart from gaps", async () => {
  // A short lag allowance: a page that falls 256 updates behind is conflated.
  const other = await spawnServer("synthetic:symbols=200,rate=20000", ["--max-lag-updates", "256"], 0);
  try {
    // No throttle, and the page's CPU slowed fiftyfold: it cannot keep up.
    const page = await newPage("?throttle=0&symbol=SYN0000", other.port);
    await waitForPrices(page, ["SYN0000"]);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Emulation.setCPUThrottlingRate", { rate: 50 });
    // The server's count: the slowed page would take long to read its notice.
    const conflated = async () => metric(await (await fetch(`http://127.0.0.1:${other.port}/metrics`)).text(), "tickwire_conflated_updates_total");
    for (let i = 0; i < 100 && (await conflated()) === 0; i++) await new Promise((r) => setTimeout(r, 300));
    assert.ok((await conflated()) > 0, "the server conflated the slowed page");
    await cdp.send("Emulation.setCPUThrottlingRate", { rate: 1 });
    await page.waitForFunction(() => Number(document.getElementById("s-conflated").textContent.replace(/,/g, "")) > 0, null, { timeout: 10_000 });
    assert.equal(await page.evaluate(() => window.tickwire.gaps), 0, "conflation is not a gap");
    assert.equal(await page.textContent("#s-gaps"), "0");
    assert.equal(await page.$eval("#s-gaps-item", (e) => e.classList.contains("bad")), false);
    await page.context().close();
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
  }
});

test("1,000 symbols at 20,000 updates a second: the page keeps up, nothing conflated, only the rows in view drawn", async () => {
  // The goals (50 frames/s, p99 100 ms publish to paint) are measured by
  // web/bench/scale.mjs on a release build (docs/BENCHMARKS.md); here,
  // against the debug build on a machine running other things, only what
  // no load excuses: the page reads everything the server sends (the
  // server conflates nothing for it, no gaps), the grid has every symbol
  // and draws only the rows in view, and frames and latency are far from
  // the seconds of falling behind.
  // A lag allowance of 13 s of updates: a machine too loaded to run the
  // debug server's writer or the page for a moment does not conflate it;
  // a page that cannot keep up falls behind for good, which the p50 shows.
  const lag = ["--ring-capacity", "262144", "--max-lag-updates", "262143"];
  const other = await spawnServer("synthetic:symbols=1000,rate=20000", lag, 0);
  try {
    const page = await newPage("", other.port);
    await page.waitForFunction(() => document.getElementById("grid-count").textContent === "1,000 of 1,000", null, { timeout: 30_000 });
    await page.waitForTimeout(2000);
    const before = await page.evaluate(() => {
      window.__frames = 0;
      const tick = () => {
        window.__frames++;
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
      return { conflated: window.tickwire.conflatedUpdates, messages: window.tickwire.messages };
    });
    await page.waitForTimeout(5000);
    const after = await page.evaluate(() => ({
      frames: window.__frames,
      conflated: window.tickwire.conflatedUpdates,
      gaps: window.tickwire.gaps,
      messages: window.tickwire.messages,
      p50: parseFloat(document.getElementById("s-p50").textContent),
      domRows: document.querySelectorAll("#rows tr").length,
    }));
    const report = JSON.stringify({ ...after, messages: after.messages - before.messages });
    assert.equal(after.conflated, before.conflated, `nothing conflated: ${report}`);
    assert.equal(after.gaps, 0, report);
    assert.ok(after.messages - before.messages > 5 * 5000, `the updates arrive: ${report}`);
    assert.ok(after.domRows < 80, `rows in the DOM: ${report}`);
    assert.ok(after.frames >= 5 * 10, `at least 10 frames/s: ${report}`);
    assert.ok(after.p50 < 1000, `publish to paint p50 under a second: ${report}`);
    await page.context().close();
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
  }
});

test("1,000 symbols with books: the selected one's ladder, candles and trades beside the grid (README's picture)", async () => {
  const other = await spawnServer("synthetic:symbols=1000,rate=20000,book=10", [], 0);
  try {
    // Tall enough for the ladder under the charts.
    const context = await browser.newContext({ viewport: { width: 1440, height: 1180 } });
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${other.port}/?symbol=SYN0000&interval=1s`);
    await page.waitForFunction(() => document.getElementById("grid-count").textContent === "1,000 of 1,000", null, { timeout: 30_000 });
    // Ten levels a side, best first and not crossed; candles closing.
    await page.waitForFunction(() => document.querySelectorAll("#ladder-rows td[data-price]").length === 20, null, { timeout: 20_000 });
    const [bids, asks] = await page.evaluate(() =>
      ["bid", "ask"].map((side) => [...document.querySelectorAll(`#ladder-rows td.${side}[data-price]`)].map((td) => Number(td.dataset.price))),
    );
    assert.ok(bids.every((p, i) => i === 0 || p < bids[i - 1]) && asks.every((p, i) => i === 0 || p > asks[i - 1]), `${bids} | ${asks}`);
    assert.ok(bids[0] < asks[0]);
    await page.waitForFunction(() => Number(document.getElementById("candles").dataset.bars) >= 8, null, { timeout: 30_000 });
    await page.screenshot({ path: join(SHOTS, "market.png") });
    await context.close();
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
  }
});

/**
 * A venue speaking just enough WebSocket (RFC 6455: the handshake, and
 * unmasked text frames out; whatever the client sends is read and
 * ignored) for the test to play messages to: `send` writes them to the
 * open connections and the next one. Otherwise it is silent.
 */
async function fakeVenue() {
  const { createHash } = await import("node:crypto");
  const frame = (text) => {
    const payload = Buffer.from(text);
    const head = payload.length < 126 ? Buffer.from([0x81, payload.length]) : Buffer.from([0x81, 126, payload.length >> 8, payload.length & 255]);
    return Buffer.concat([head, payload]);
  };
  let connections = 0;
  let pending = [];
  const open = [];
  const venue = http.createServer((req, res) => res.writeHead(404).end());
  venue.on("upgrade", (req, socket) => {
    connections++;
    open.push(socket);
    socket.on("close", () => open.splice(open.indexOf(socket), 1));
    socket.on("data", () => {});
    socket.on("error", () => {});
    const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    for (const m of pending.splice(0)) socket.write(frame(m));
  });
  venue.listen(0, "127.0.0.1");
  await once(venue, "listening");
  return {
    port: venue.address().port,
    connections: () => connections,
    send: (messages) => {
      // The client may already have given up an open connection: the
      // next one gets them too (a venue resends; the feed drops what it
      // has seen).
      for (const socket of open) for (const m of messages) socket.write(frame(m));
      pending = [...messages];
    },
    close: () => {
      for (const s of [...open]) s.destroy();
      venue.close();
    },
  };
}

test("a symbol whose venue falls silent stays in the grid, marked stale with the reason, until its data resumes", async () => {
  const lines = readFileSync(join(ROOT, "tests", "data", "binance-spot-BTCUSDT-20230405-head300.jsonl"), "utf8")
    .split("\n")
    .filter((l) => l.includes("@bookTicker") || l.includes("@trade"))
    .map((l) => l.slice(l.indexOf(" ") + 1));
  const venue = await fakeVenue();
  const feed = `binance:ws://127.0.0.1:${venue.port}/stream?streams=btcusdt@bookTicker/btcusdt@trade`;
  const other = await spawnServer(feed, ["--upstream-silence-timeout-ms", "1500", "--upstream-backoff-initial-ms", "2000"], 0);
  try {
    const page = await newPage("?symbol=BTCUSDT", other.port);
    await page.waitForFunction(() => document.querySelector("#s-state b").textContent === "live");
    // 60 messages, then silence.
    venue.send(lines.slice(0, 60));
    await waitForPrices(page, ["BTCUSDT"]);
    const row = '#rows tr[data-symbol="BTCUSDT"]';
    await page.waitForSelector(`${row}.stale`, { timeout: 15_000 });
    // The last known values stay, dimmed, with the reason.
    assert.match(await page.getAttribute(row, "title"), /^stale: (silent|disconnected)$/);
    const shown = (await gridRows(page)).find((r) => r.symbol === "BTCUSDT");
    assert.ok(lines.slice(0, 60).some((l) => l.includes(`"b":"${shown.bid}`)), `${shown.bid} is a bid the venue sent`);
    assert.equal(await page.$eval(`${row} td.bid`, (td) => getComputedStyle(td).opacity), "0.45");
    await page.screenshot({ path: join(SHOTS, "stale.png") });
    // Data again (newer): live, unmarked.
    venue.send(lines.slice(60));
    await page.waitForFunction((sel) => !document.querySelector(sel).classList.contains("stale"), row, { timeout: 20_000 });
    assert.equal(await page.getAttribute(row, "title"), "");
    assert.ok(venue.connections() >= 2, "the silent connection was replaced");
    await page.context().close();
  } finally {
    other.child.kill("SIGTERM");
    await once(other.child, "exit");
    venue.close();
  }
});
