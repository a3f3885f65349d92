// The dashboard: a watchlist grid, a detail panel for the selected symbol,
// and a status bar, over TickwireClient. The client decodes once per
// animation frame and emits `batch`; this file only updates its model on
// each message and touches the DOM and canvases in the `batch` handler, for
// the rows that changed.
//
// URL parameters: `symbol` (the selection; also kept in localStorage),
// `interval` (the candle chart's, likewise), `ws` / `sse` (endpoint
// paths), `transport` (auto, websocket, sse).

import { TickwireClient, formatFixed, parseFixed, INTERVALS } from "./tickwire.js";
import { Grid, usedDecimals, trimDecimals, venueTime } from "./grid.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const STORE_WATCH = "tickwire.watchlist";
const STORE_SELECTED = "tickwire.selected";
const STORE_INTERVAL = "tickwire.candleInterval";
// The candle chart: one bar per this many CSS pixels.
const CANDLE_SLOT = 9;
const SPARK_BUCKET_MS = 500;
const SPARK_POINTS = 120;
const CHART_BUCKET_MS = 100;
const CHART_WINDOW_MS = 5 * 60 * 1000;
const TRADES_KEPT = 40;
// The depth ladder: the selected symbol's top levels, on their own channel.
const BOOK_CHANNEL = "book.10";

function loadWatchlist() {
  try {
    const list = JSON.parse(localStorage.getItem(STORE_WATCH));
    if (Array.isArray(list)) return list;
  } catch {
    // A damaged entry: start over with everything.
  }
  return ["*"];
}

const client = new TickwireClient({
  symbols: loadWatchlist(),
  wsPath: params.get("ws") ?? "/ws",
  ssePath: params.get("sse") ?? "/sse",
  transport: params.get("transport") ?? "auto",
  // Several updates per WebSocket message; `?batch=0` for one each.
  wsBatch: params.get("batch") !== "0",
  pollPath: params.get("poll") ?? "/poll",
  sseTimeoutMs: Number(params.get("sseTimeout")) || undefined,
  // The top of each book too: a venue with depth and no best bid and
  // offer stream still fills its row.
  channels: ["quotes", "trades", "book.1"],
  // The grid needs no more than twenty of a symbol's values a second (a
  // value waits at most 50 ms; its trades all come, together); the
  // selected symbol, whose book the page follows, comes at full rate.
  // `?throttle=0` turns it off.
  throttleMs: Number(params.get("throttle") ?? 50) || undefined,
  // The selected symbol's candles, at the picked interval.
  candleInterval: [params.get("interval"), localStorage.getItem(STORE_INTERVAL)].find((i) => INTERVALS.includes(i)) ?? "1m",
});
// For tests and the console.
window.tickwire = client;

const rows = new Map(); // name -> Row
let selected = params.get("symbol") ?? localStorage.getItem(STORE_SELECTED);
let chartDirty = true;
let tradesDirty = true;
// The selected symbol's book (TickwireClient's `book` event), and whether
// the ladder shows it yet.
let book = null;
let bookDirty = true;
// The selected symbol's candles (TickwireClient's `candles` event).
let candles = null;
let candlesDirty = true;
// A frame is requested (`requestFrame`).
let frameAsked = false;

function saveWatchlist() {
  localStorage.setItem(STORE_WATCH, JSON.stringify(client.subscriptions()));
}

// ---- model ----

class Row {
  constructor(name) {
    this.name = name;
    this.priceDecimals = 8;
    this.sizeDecimals = 8;
    // The decimals this symbol's prices and sizes actually use (trailing
    // zeros the venue never fills are not shown), the most seen so far.
    this.pxUsed = 0;
    this.szUsed = 0;
    this.bidPx = this.askPx = this.lastPx = this.openPx = null;
    this.bid = this.ask = this.bidSize = this.askSize = this.last = this.spread = null;
    this.chg = this.pct = null;
    this.chgSign = 0;
    this.lastSide = "unknown";
    this.lastTradeMs = null; // venue time of the last trade
    // Publish times (ms) of the newest quote and trade: the page's
    // publish-to-paint latency is measured from them.
    this.quotePub = this.tradePub = 0;
    // Bumped when the quote, trade or sparkline changes: the grid redraws
    // what it drew of an older one.
    this.qv = this.tv = this.sv = 0;
    this.stale = undefined; // the reason, while the venue lost the symbol
    this.spark = []; // [bucket, mid]
    this.history = []; // [bucket, bidN, askN] at CHART_BUCKET_MS
    this.trades = []; // newest last
    this.updates = 0;
    this.symbolSeq = 0;
  }

  usesPrice(...texts) {
    for (const t of texts) if (t) this.pxUsed = Math.max(this.pxUsed, usedDecimals(t));
  }

  usesSize(...texts) {
    for (const t of texts) if (t) this.szUsed = Math.max(this.szUsed, usedDecimals(t));
  }

  quote(m) {
    Object.assign(this, {
      bidPx: m.bidPx, askPx: m.askPx, bid: m.bid, ask: m.ask, bidSize: m.bidSize, askSize: m.askSize,
      priceDecimals: m.priceDecimals, sizeDecimals: m.sizeDecimals,
    });
    this.usesPrice(m.bid, m.ask);
    this.usesSize(m.bidSize, m.askSize);
    this.spread = formatFixed(m.askPx - m.bidPx, m.priceDecimals);
    this.quotePub = Number(m.publishTs) / 1e6;
    this.qv++;
    this.touch(m);
    // Numbers only for drawing; what is shown as text stays exact.
    const mid = Number(m.bidPx + m.askPx) / 2;
    const now = m.receivedAt;
    const sb = Math.floor(now / SPARK_BUCKET_MS);
    const lastSpark = this.spark[this.spark.length - 1];
    if (lastSpark && lastSpark[0] === sb) {
      if (lastSpark[1] !== mid) this.sv++;
      lastSpark[1] = mid;
    } else {
      this.spark.push([sb, mid]);
      if (this.spark.length > SPARK_POINTS) this.spark.shift();
      this.sv++;
    }
    const cb = Math.floor(now / CHART_BUCKET_MS);
    const h = this.history[this.history.length - 1];
    if (h && h[0] === cb) {
      h[1] = Number(m.bidPx);
      h[2] = Number(m.askPx);
    } else {
      this.history.push([cb, Number(m.bidPx), Number(m.askPx)]);
      const oldest = cb - CHART_WINDOW_MS / CHART_BUCKET_MS;
      while (this.history.length && this.history[0][0] < oldest) this.history.shift();
    }
    if (this.name === selected) chartDirty = true;
  }

  trade(m) {
    if (this.openPx === null) this.openPx = m.px;
    Object.assign(this, { lastPx: m.px, last: m.price, lastSide: m.side, priceDecimals: m.priceDecimals });
    this.usesPrice(m.price);
    this.usesSize(m.size);
    const diff = m.px - this.openPx;
    this.chgSign = diff > 0n ? 1 : diff < 0n ? -1 : 0;
    const sign = diff > 0n ? "+" : "";
    this.chg = sign + formatFixed(diff, m.priceDecimals);
    // Basis points, truncated, in integers: a percentage with two exact decimals.
    const bp = this.openPx === 0n ? 0n : (diff * 10000n) / this.openPx;
    this.pct = `${sign}${formatFixed(bp, 2)}%`;
    const ts = Number((m.exchangeTs || m.receiveTs) / 1_000_000n);
    this.lastTradeMs = ts;
    this.tradePub = Number(m.publishTs) / 1e6;
    this.tv++;
    this.touch(m);
    this.trades.push({ t: ts, side: m.side, price: m.price, size: m.size, at: m.receivedAt, px: Number(m.px) });
    if (this.trades.length > TRADES_KEPT * 25) this.trades.splice(0, this.trades.length - TRADES_KEPT * 5);
    if (this.name === selected) tradesDirty = chartDirty = true;
  }

  touch(m) {
    this.updates++;
    this.symbolSeq = m.symbolSeq;
  }
}

function rowFor(name) {
  let r = rows.get(name);
  if (!r) {
    r = new Row(name);
    r.stale = client.stale.get(name);
    rows.set(name, r);
    grid.add(r);
    $("empty").hidden = true;
    if (!selected) select(name, false);
  }
  return r;
}

function removeRow(name) {
  if (!rows.delete(name)) return;
  grid.remove(name);
  $("empty").hidden = rows.size > 0;
}

const grid = new Grid(
  {
    scroller: $("grid-scroll"),
    body: $("rows"),
    padTop: $("pad-top"),
    padBottom: $("pad-bottom"),
    head: document.querySelector(".grid thead"),
    filter: $("filter"),
    starredOnly: $("starred-only"),
    count: $("grid-count"),
  },
  {
    select: (name) => select(name, true),
    unsubscribe: (name) => unsubscribe(name),
    redraw: () => requestFrame(),
  },
);
grid.setSelected(selected);
// For tests and the console.
window.dashboard = { grid, rows };

// ---- detail ----

function select(name, user) {
  selected = name;
  if (user) {
    localStorage.setItem(STORE_SELECTED, name);
    const p = new URLSearchParams(location.search);
    p.set("symbol", name);
    history.replaceState(null, "", `?${p}`);
  }
  grid.setSelected(name);
  chartDirty = tradesDirty = true;
  if (client.bookWatch?.symbol !== name) {
    book = null;
    bookDirty = true;
    candles = null;
    candlesDirty = true;
    client.watchBook(name, BOOK_CHANNEL);
  }
  drawDetail();
}

/**
 * The ladder: bids and asks side by side, best first, sizes as bars
 * (relative to the largest shown), levels that changed flashing, the
 * spread above. Prices and sizes are the server's exact strings.
 */
function drawLadder() {
  bookDirty = false;
  const body = $("ladder-rows");
  const stale = client.stale.get(selected);
  $("ladder").classList.toggle("stale", stale !== undefined);
  if (!book || book.symbol !== selected) {
    $("book-meta").textContent = stale ? `stale: ${stale}` : "";
    body.innerHTML = `<tr><td colspan="4" class="muted l">${stale ? "stale: waiting for the venue's snapshot" : "no book for this symbol"}</td></tr>`;
    return;
  }
  const { bids, asks, changed } = book;
  const n = Math.max(bids.length, asks.length);
  // The symbol's decimals in use, as in its grid row.
  const r = selectedRow();
  for (const [p, q] of [...bids, ...asks]) {
    r.usesPrice(p);
    r.usesSize(q);
  }
  let max = 0;
  for (const [, q] of [...bids, ...asks]) max = Math.max(max, Number(q));
  const cell = (side, level) => {
    if (!level) return `<td class="${side}-size"></td><td class="${side}"></td>`;
    const [p, q] = level;
    const flash = changed.has(`${side === "bid" ? "b" : "a"}:${p}`) ? " flash" : "";
    const w = max > 0 ? ((Number(q) / max) * 100).toFixed(1) : "0";
    const size = `<td class="${side}-size${flash}" style="--w:${w}%" data-side="${side}" data-size="${q}">${trimDecimals(q, r.szUsed)}</td>`;
    const price = `<td class="${side}${flash}" data-side="${side}" data-price="${p}">${trimDecimals(p, r.pxUsed)}</td>`;
    return side === "bid" ? size + price : price + size;
  };
  let html = "";
  for (let i = 0; i < n; i++) html += `<tr>${cell("bid", bids[i])}${cell("ask", asks[i])}</tr>`;
  body.innerHTML = html;
  const spread = bids.length && asks.length ? trimDecimals(spreadText(bids[0][0], asks[0][0]), r.pxUsed) : "—";
  $("book-meta").textContent = `spread ${spread} · book_seq ${book.bookSeq}${stale ? ` · stale: ${stale}` : ""}`;
}

/** The selected symbol's row, or a blank one to keep its decimals in use while it has none. */
function selectedRow() {
  return rows.get(selected) ?? new Row(selected);
}

// Best ask minus best bid, exactly: both strings carry the symbol's decimals.
function spreadText(bid, ask) {
  const decimals = (bid.split(".")[1] ?? "").length;
  const m = (t) => BigInt(t.replace(".", ""));
  return formatFixed(m(ask) - m(bid), decimals);
}

/** The selected symbol's panel; `painted` collects the publish times of values shown anew. */
function drawDetail(painted) {
  const r = rows.get(selected);
  $("d-symbol").textContent = selected ?? "—";
  if (!r) {
    $("d-meta").textContent = selected ? "not subscribed" : "";
    return;
  }
  // A venue with depth and no best-bid-offer stream: the book's top.
  const top = (side) => (book?.symbol === selected ? book[side][0] : undefined);
  const px = (t) => trimDecimals(t, r.pxUsed);
  const bid = px(r.bid ?? top("bids")?.[0]) ?? "—";
  if ($("d-bid").textContent !== bid && r.quotePub && painted) painted.push(r.quotePub);
  $("d-bid").textContent = bid;
  $("d-ask").textContent = px(r.ask ?? top("asks")?.[0]) ?? "—";
  // A size the venue did not give is unknown ("—"), which 0 is not.
  for (const [id, size] of [["d-bidsz", r.bidSize], ["d-asksz", r.askSize]]) {
    const el = $(id);
    el.textContent = r.bid === null ? "" : `× ${trimDecimals(size, r.szUsed) ?? "—"}`;
    el.title = r.bid !== null && size === null ? "size unknown: the venue did not send it" : "";
  }
  $("d-meta").textContent = `${r.updates} updates · seq ${r.symbolSeq} · ${r.pxUsed} of ${r.priceDecimals} decimals in use`;
  if (tradesDirty) {
    drawTrades(r);
    tradesDirty = false;
  }
  if (chartDirty) {
    drawChart(r);
    chartDirty = false;
  }
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

function drawTrades(r) {
  const body = $("trades");
  const recent = r.trades.slice(-TRADES_KEPT).reverse();
  const html = recent
    .map(
      (t) =>
        `<tr><td class="l">${venueTime(t.t)}</td>` +
        `<td class="l ${t.side}">${t.side}</td><td class="${t.side}">${trimDecimals(t.price, r.pxUsed)}</td><td>${trimDecimals(t.size, r.szUsed)}</td></tr>`,
    )
    .join("");
  body.innerHTML = html;
}

// Axis ticks on round mantissa steps (1, 2 or 5 × 10^k units), formatted
// from integers: exact labels, never float noise.
function niceStep(rawUnits) {
  const k = Math.max(0, Math.floor(Math.log10(Math.max(rawUnits, 1))));
  const base = 10 ** k;
  for (const m of [1, 2, 5, 10]) if (m * base >= rawUnits) return { step: BigInt(m * base), k: m === 10 ? k + 1 : k };
  return { step: BigInt(10 * base), k: k + 1 };
}

function label(mantissa, decimals, k) {
  const s = formatFixed(mantissa, decimals);
  // Drop the decimals the step makes zero anyway.
  const drop = Math.min(k, decimals);
  if (drop === 0) return s;
  const cut = s.slice(0, s.length - drop);
  return cut.endsWith(".") ? cut.slice(0, -1) : cut;
}

// The charts' CSS sizes, as a ResizeObserver reports them: reading
// clientWidth while drawing would force a layout after the grid's writes
// in every frame (a third of the page's script time at 1,000 symbols).
const canvasSizes = new WeakMap();
const canvasObserver = new ResizeObserver((entries) => {
  for (const e of entries) {
    canvasSizes.set(e.target, [e.contentRect.width, e.contentRect.height]);
    if (e.target.id === "candles") candlesDirty = true;
    else chartDirty = true;
  }
  requestFrame();
});

/** Sizes `canvas` to its CSS box at the device's pixel ratio and clears it. */
function clearedCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  if (!canvasSizes.has(canvas)) {
    canvasSizes.set(canvas, [canvas.clientWidth, canvas.clientHeight]);
    canvasObserver.observe(canvas);
  }
  const [w, h] = canvasSizes.get(canvas);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  return { g, w, h };
}

function drawChart(r) {
  const canvas = $("chart");
  const { g, w, h } = clearedCanvas(canvas);
  const padR = 92;
  const padB = 22;
  const pw = w - padR;
  const ph = h - padB - 8;
  const now = Date.now();
  const hist = r.history;
  // The last five minutes, or since the first quote when that is sooner
  // (at least half a minute), so that a fresh page is not a sliver.
  const first = hist.length ? hist[0][0] * CHART_BUCKET_MS : now;
  const t0 = Math.max(now - CHART_WINDOW_MS, Math.min(first, now - 30_000));
  const span = now - t0;
  const trades = r.trades.filter((t) => t.at >= t0);
  g.font = "11px ui-monospace, Menlo, Consolas, monospace";
  if (!hist.length) {
    g.fillStyle = "#7f8a96";
    g.fillText("waiting for quotes…", 12, 20);
    return;
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, b, a] of hist) {
    lo = Math.min(lo, b);
    hi = Math.max(hi, a);
  }
  for (const t of trades) {
    lo = Math.min(lo, t.px);
    hi = Math.max(hi, t.px);
  }
  const { step, k } = niceStep((hi - lo) / 5 || 1);
  const s = Number(step);
  lo = Math.floor(lo / s) * s;
  hi = Math.ceil(hi / s) * s;
  if (hi === lo) hi = lo + s;
  const x = (ms) => ((ms - t0) / span) * pw;
  const y = (v) => 8 + ph - ((v - lo) / (hi - lo)) * ph;

  // Grid and price labels.
  g.strokeStyle = "#1f252c";
  g.fillStyle = "#7f8a96";
  g.lineWidth = 1;
  for (let v = BigInt(lo); v <= BigInt(hi); v += step) {
    const yy = Math.round(y(Number(v))) + 0.5;
    g.beginPath();
    g.moveTo(0, yy);
    g.lineTo(pw, yy);
    g.stroke();
    g.fillText(label(v, r.priceDecimals, k), pw + 8, yy + 4);
  }
  const every = [5_000, 10_000, 15_000, 30_000, 60_000].find((e) => span / e <= 6) ?? 60_000;
  for (let m = Math.ceil(t0 / every) * every; m <= now; m += every) {
    const xx = Math.round(x(m)) + 0.5;
    g.beginPath();
    g.moveTo(xx, 8);
    g.lineTo(xx, 8 + ph);
    g.stroke();
    g.fillText(timeFmt.format(m), xx - 24, h - 6);
  }

  // The spread as a band, the bid and ask as its edges.
  const pts = hist.map(([b, bid, ask]) => [x(b * CHART_BUCKET_MS), y(bid), y(ask)]);
  g.beginPath();
  pts.forEach(([xx, , ya], i) => (i ? g.lineTo(xx, ya) : g.moveTo(xx, ya)));
  for (let i = pts.length - 1; i >= 0; i--) g.lineTo(pts[i][0], pts[i][1]);
  g.closePath();
  g.fillStyle = "rgba(74,163,255,.18)";
  g.fill();
  for (const [idx, color] of [[1, "#26c281"], [2, "#f0506e"]]) {
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(p[0], p[idx]) : g.moveTo(p[0], p[idx])));
    g.strokeStyle = color;
    g.lineWidth = 1.2;
    g.stroke();
  }
  for (const t of trades) {
    g.fillStyle = t.side === "sell" ? "#f0506e" : t.side === "buy" ? "#26c281" : "#c7ced6";
    g.fillRect(x(t.at) - 1.5, y(t.px) - 1.5, 3, 3);
  }

  // Its time axis is this computer's clock (when quotes arrived); the
  // trades list and the candles are in the venue's time, UTC.
  g.fillStyle = "#7f8a96";
  g.fillText("local", pw + 8, h - 6);

  // The latest bid as a tag on the axis.
  const last = hist[hist.length - 1];
  const yy = y(last[1]);
  g.fillStyle = "#26c281";
  g.fillRect(pw + 2, yy - 8, padR - 4, 16);
  g.fillStyle = "#0b0e11";
  g.fillText(trimDecimals(r.bid, r.pxUsed), pw + 6, yy + 4);
}

// ---- candles ----

const utcTime = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZone: "UTC" });
const utcDay = new Intl.DateTimeFormat("en-GB", { month: "short", day: "2-digit", timeZone: "UTC" });

function pickInterval(interval, user) {
  for (const b of document.querySelectorAll("#intervals button")) b.setAttribute("aria-pressed", String(b.dataset.interval === interval));
  if (!user) return;
  localStorage.setItem(STORE_INTERVAL, interval);
  const p = new URLSearchParams(location.search);
  p.set("interval", interval);
  history.replaceState(null, "", `?${p}`);
  candles = null;
  candlesDirty = true;
  client.watchCandles(interval);
}

/**
 * The selected symbol's bars as candlesticks, as many of the newest as fit:
 * a wick from low to high, a body from open to close (green up, red down),
 * the open bar paler. Times are UTC interval starts. The newest bar's
 * exact values are written beside the title, and kept on the canvas's
 * dataset for tests.
 */
function drawCandles() {
  candlesDirty = false;
  const canvas = $("candles");
  const { g, w, h } = clearedCanvas(canvas);
  g.font = "11px ui-monospace, Menlo, Consolas, monospace";
  const interval = client.candleInterval;
  const bars = candles?.interval === interval ? candles.bars : [];
  const closed = bars.filter((b) => b.closed);
  const lastClosed = closed[closed.length - 1];
  canvas.dataset.interval = interval;
  canvas.dataset.bars = String(bars.length);
  canvas.dataset.lastClosed = lastClosed ? JSON.stringify([lastClosed.startMs, lastClosed.open, lastClosed.high, lastClosed.low, lastClosed.close, lastClosed.volume, lastClosed.trades]) : "";
  canvas.dataset.starts = bars.map((b) => b.startMs).join(",");
  const newest = bars[bars.length - 1];
  const r = selectedRow();
  if (newest) r.usesPrice(newest.open, newest.high, newest.low, newest.close);
  const px = (t) => trimDecimals(t, r.pxUsed);
  $("candle-meta").textContent = newest
    ? `${newest.closed ? "closed" : "open"} ${utcTime.format(newest.startMs)} UTC · O ${px(newest.open)} H ${px(newest.high)} L ${px(newest.low)} C ${px(newest.close)} · V ${trimDecimals(newest.volume, r.szUsed)} · ${newest.trades} trades`
    : "";
  if (!bars.length) {
    g.fillStyle = "#7f8a96";
    g.fillText(selected ? "waiting for trades…" : "select a symbol", 12, 20);
    return;
  }
  const pd = decimalsOf(newest.open);
  const padR = 92;
  const padB = 22;
  const pw = w - padR;
  const ph = h - padB - 8;
  const shown = bars.slice(-Math.max(1, Math.floor(pw / CANDLE_SLOT)));
  const num = (t) => Number(parseFixed(t, pd));
  let lo = Infinity;
  let hi = -Infinity;
  for (const b of shown) {
    lo = Math.min(lo, num(b.low));
    hi = Math.max(hi, num(b.high));
  }
  const { step, k } = niceStep((hi - lo) / 5 || 1);
  const s = Number(step);
  lo = Math.floor(lo / s) * s;
  hi = Math.ceil(hi / s) * s;
  if (hi === lo) hi = lo + s;
  const y = (v) => 8 + ph - ((v - lo) / (hi - lo)) * ph;
  g.strokeStyle = "#1f252c";
  g.fillStyle = "#7f8a96";
  g.lineWidth = 1;
  for (let v = BigInt(lo); v <= BigInt(hi); v += step) {
    const yy = Math.round(y(Number(v))) + 0.5;
    g.beginPath();
    g.moveTo(0, yy);
    g.lineTo(pw, yy);
    g.stroke();
    g.fillText(label(v, pd, k), pw + 8, yy + 4);
  }
  // A time label every so many bars, at UTC.
  const every = Math.max(1, Math.ceil(80 / CANDLE_SLOT));
  const fmt = interval === "1d" ? utcDay : utcTime;
  shown.forEach((b, i) => {
    const x = i * CANDLE_SLOT + CANDLE_SLOT / 2;
    if (i % every === 0) {
      g.fillStyle = "#7f8a96";
      g.fillText(fmt.format(b.startMs), Math.max(0, x - 24), h - 6);
    }
    const [o, c] = [num(b.open), num(b.close)];
    const color = c >= o ? "#26c281" : "#f0506e";
    g.globalAlpha = b.closed ? 1 : 0.6;
    g.strokeStyle = g.fillStyle = color;
    g.beginPath();
    g.moveTo(Math.round(x) + 0.5, y(num(b.high)));
    g.lineTo(Math.round(x) + 0.5, y(num(b.low)));
    g.stroke();
    const top = y(Math.max(o, c));
    g.fillRect(x - (CANDLE_SLOT - 3) / 2, top, CANDLE_SLOT - 3, Math.max(1, y(Math.min(o, c)) - top));
    g.globalAlpha = 1;
  });
  g.fillStyle = "#7f8a96";
  g.fillText("UTC", pw + 8, h - 6);
}

function decimalsOf(text) {
  const dot = text.indexOf(".");
  return dot < 0 ? 0 : text.length - dot - 1;
}

// ---- subscriptions ----

function subscribe(name) {
  name = name.trim();
  if (!name) return;
  $("notice").textContent = "";
  client.subscribe([name]);
  saveWatchlist();
}

function unsubscribe(name) {
  client.unsubscribe([name]);
  removeRow(name);
  saveWatchlist();
}

function refreshSuggestions() {
  const watched = new Set(rows.keys());
  const options = [...client.knownSymbols].filter((n) => !watched.has(n)).sort();
  $("symbol-list").innerHTML = options.map((n) => `<option value="${n.replace(/"/g, "&quot;")}">`).join("");
}

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  subscribe($("search").value);
  $("search").value = "";
});

// ---- status ----

// Publish to paint: from an update's publish_ts to the end of the frame
// that shows it (a message posted from the frame runs once the main
// thread has painted it); publish to arrival, for the tooltip.
const latencies = new Float64Array(4096);
let latencyCount = 0;
const arrivals = new Float64Array(4096);
let arrivalCount = 0;
const wallMs = () => performance.timeOrigin + performance.now();
let paintedPending = [];
const afterPaint = new MessageChannel();
afterPaint.port1.onmessage = () => {
  const t = wallMs();
  for (const p of paintedPending) latencies[latencyCount++ % latencies.length] = t - p;
  paintedPending = [];
};

function percentiles(samples, count) {
  const n = Math.min(count, samples.length);
  if (!n) return null;
  const sorted = samples.slice(0, n).sort();
  const pct = (p) => sorted[Math.min(n - 1, Math.floor((p / 100) * n))];
  return [pct(50), pct(99)];
}
let lastMessages = 0;
let lastTick = performance.now();

function setState(detail) {
  const el = $("s-state");
  el.className = `state ${detail.state}`;
  el.querySelector("b").textContent = detail.state;
  el.title = detail.reason ?? "";
  $("s-proto").textContent = detail.subprotocol ?? "—";
}

function tickStatus() {
  const now = performance.now();
  const rate = ((client.messages - lastMessages) * 1000) / (now - lastTick);
  lastMessages = client.messages;
  lastTick = now;
  $("s-rate").textContent = Math.round(rate).toLocaleString("en-US");
  const paint = percentiles(latencies, latencyCount);
  if (paint) {
    $("s-p50").textContent = `${paint[0].toFixed(1)} ms`;
    $("s-p99").textContent = `${paint[1].toFixed(1)} ms`;
  }
  const arrival = percentiles(arrivals, arrivalCount);
  if (arrival) $("s-latency").title = `publish to paint, the last second; publish to arrival: p50 ${arrival[0].toFixed(1)} ms, p99 ${arrival[1].toFixed(1)} ms`;
  latencyCount = arrivalCount = 0;
  $("s-conflated").textContent = client.conflatedUpdates.toLocaleString("en-US");
  $("s-throttled").textContent = client.throttledSkips.toLocaleString("en-US");
  $("s-gaps").textContent = client.gaps.toLocaleString("en-US");
  $("s-gaps-item").classList.toggle("bad", client.gaps > 0);
  $("s-clock").textContent = timeFmt.format(Date.now());
  chartDirty = true; // the time axis moves
}

// ---- wiring ----

// Once for many definitions: 5,000 symbols arrive in the first second, and
// rebuilding the list for each was quadratic (seconds of a frozen page).
let suggestionsDue = null;
client.addEventListener("symbol", () => {
  suggestionsDue ??= setTimeout(() => {
    suggestionsDue = null;
    refreshSuggestions();
  }, 250);
});
client.addEventListener("quote", (e) => {
  const m = e.detail;
  if (!m.snapshot) arrivals[arrivalCount++ % arrivals.length] = m.latencyMs;
  const r = rowFor(m.symbol);
  r.hasQuotes = true;
  r.quote(m);
});
// A row whose venue sends no quotes takes its bid and ask from the book.
client.addEventListener("top", (e) => {
  const r = rowFor(e.detail.symbol);
  if (r.hasQuotes) return;
  r.fromBook = true;
  r.quote(e.detail);
});
client.addEventListener("trade", (e) => {
  const m = e.detail;
  if (!m.snapshot) arrivals[arrivalCount++ % arrivals.length] = m.latencyMs;
  rowFor(m.symbol).trade(m);
});
client.addEventListener("book", (e) => {
  if (e.detail.symbol !== selected) return;
  book = e.detail;
  bookDirty = true;
});
client.addEventListener("candles", (e) => {
  if (e.detail.symbol !== selected) return;
  candles = e.detail;
  candlesDirty = true;
});
/** Draws what changed: called once per animation frame that has news. */
function drawFrame() {
  const painted = [];
  grid.draw(performance.now(), painted);
  if (chartDirty || tradesDirty) drawDetail(painted);
  if (bookDirty) drawLadder();
  if (candlesDirty) drawCandles();
  if (painted.length) {
    if (!paintedPending.length) afterPaint.port2.postMessage(0);
    for (const p of painted) paintedPending.push(p);
  }
}

// A frame for the grid's own reasons (scrolling, sorting, filtering).
function requestFrame() {
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(() => {
    frameAsked = false;
    drawFrame();
  });
}

client.addEventListener("batch", () => drawFrame());
client.addEventListener("status", (e) => setState(e.detail));
// A stale row: its upstream feed lost the symbol; the values are the last known.
client.addEventListener("symbolstatus", (e) => {
  const m = e.detail;
  const r = rows.get(m.symbol);
  if (!r) return;
  r.stale = m.state === "stale" ? m.reason : undefined;
  r.qv++;
  requestFrame();
  if (m.symbol === selected) bookDirty = true;
});
client.addEventListener("error", (e) => {
  if (e.detail.code) $("notice").textContent = e.detail.reason;
  if (e.detail.request?.op === "subscribe") saveWatchlist();
});

setInterval(() => {
  tickStatus();
  if (chartDirty) drawDetail();
}, 1000);
window.addEventListener("resize", () => {
  chartDirty = true;
  drawDetail();
  drawCandles();
});
for (const b of document.querySelectorAll("#intervals button")) b.addEventListener("click", () => pickInterval(b.dataset.interval, true));
pickInterval(client.candleInterval, false);
$("empty").hidden = true;
setTimeout(() => {
  $("empty").hidden = rows.size > 0;
}, 3000);
if (selected) client.watchBook(selected, BOOK_CHANNEL);
client.start();
drawDetail();
drawLadder();
drawCandles();
