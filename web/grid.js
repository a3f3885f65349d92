// The dashboard's symbol grid, virtualized: however many symbols are
// subscribed, the DOM holds only the rows the scroller shows (and a few
// beyond), and a frame touches only those of them whose values changed
// since they were drawn. Rows are one fixed height, so a row's place is its
// index times that height; two spacer bodies above and below keep the
// scrollbar true. Sorting, the name filter and the watchlist (starred
// symbols, kept in localStorage) choose which rows, in which order; the
// keyboard moves a cursor through them.
//
// The model is the app's: a row object per symbol with the fields read
// here (see `Row` in app.js), and counters `qv` / `tv` / `sv` that the app
// bumps when its quote, trade or sparkline changes.

const STORE_STARRED = "tickwire.starred";
const STORE_STARRED_ONLY = "tickwire.starredOnly";
const STORE_SORT = "tickwire.sort";
// Rows drawn beyond each edge of the scroller.
const OVERSCAN = 6;
// A grid sorted by a live value is sorted again at most this often, so
// that rows do not jump under the pointer every frame.
const RESORT_MS = 1000;
// A row's sparkline is redrawn at most this often (its buckets are 500 ms).
const SPARK_MS = 250;
const SPARK_W = 96;
const SPARK_H = 22;

// How long a bid and ask stay tinted after their mid moves.
const FLASH_MS = 300;

/** The decimals `text` uses: its fraction without trailing zeros. */
export function usedDecimals(text) {
  const dot = text.indexOf(".");
  if (dot < 0) return 0;
  let end = text.length;
  while (end > dot + 1 && text.charCodeAt(end - 1) === 48) end--;
  return end - dot - 1;
}

/**
 * `text` with `keep` decimals: only trailing zeros are cut (a value with
 * more decimals in use keeps them), and a bare "." goes too.
 */
export function trimDecimals(text, keep) {
  if (text === null || text === undefined) return text;
  const dot = text.indexOf(".");
  if (dot < 0) return text;
  let end = text.length;
  while (end > dot + 1 + keep && text.charCodeAt(end - 1) === 48) end--;
  return end === dot + 1 ? text.slice(0, dot) : text.slice(0, end);
}

function loadJson(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

// Sort keys: a number or a string per row; rows without a value go last.
const SORTS = {
  sym: (r) => r.name,
  bid: (r) => (r.bidPx === null ? null : Number(r.bidPx) / 10 ** r.priceDecimals),
  ask: (r) => (r.askPx === null ? null : Number(r.askPx) / 10 ** r.priceDecimals),
  // Relative, so that symbols of any price compare: basis points of the mid.
  spread: (r) => (r.bidPx === null ? null : Number(r.askPx - r.bidPx) / Number(r.askPx + r.bidPx || 1n)),
  last: (r) => (r.lastPx === null ? null : Number(r.lastPx) / 10 ** r.priceDecimals),
  chg: (r) => (r.lastPx === null ? null : Number(r.lastPx - r.openPx) / 10 ** r.priceDecimals),
  pct: (r) => (r.lastPx === null || !r.openPx ? null : Number(r.lastPx - r.openPx) / Number(r.openPx)),
  time: (r) => r.lastTradeMs,
};

const utcClock = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZone: "UTC" });

/** Venue time as UTC `HH:MM:SS.mmm`. */
export function venueTime(ms) {
  return `${utcClock.format(ms)}.${String(ms % 1000).padStart(3, "0")}`;
}

export class Grid {
  /**
   * `els`: scroller, body (#rows), padTop, padBottom, head (thead),
   * filter (input), starredOnly (button), count (span).
   * `on`: select(name), unsubscribe(name), redraw() (schedule a frame).
   */
  constructor(els, on) {
    this.els = els;
    this.on = on;
    this.rows = new Map(); // name -> model row
    this.order = []; // the rows shown, in order
    this.orderDirty = true;
    this.sortedAt = 0;
    const sort = loadJson(STORE_SORT, {});
    this.sortKey = SORTS[sort.key] ? sort.key : "sym";
    this.sortDir = sort.dir === -1 ? -1 : 1;
    this.filter = "";
    this.starred = new Set(loadJson(STORE_STARRED, []));
    this.starredOnly = loadJson(STORE_STARRED_ONLY, false) === true;
    this.selected = null;
    this.cursor = null;
    this.pool = []; // drawn row elements, in order from `first`
    this.first = 0;
    this.rowH = 0;
    this.scrollTop = 0;
    this.viewH = els.scroller.clientHeight;
    this.padTopH = this.padBottomH = -1;
    this._wire();
  }

  _wire() {
    const { scroller, head, filter, starredOnly } = this.els;
    scroller.addEventListener("scroll", () => {
      this.scrollTop = scroller.scrollTop;
      this.on.redraw();
    });
    new ResizeObserver(() => {
      this.viewH = scroller.clientHeight;
      this.on.redraw();
    }).observe(scroller);
    head.addEventListener("click", (e) => {
      const th = e.target.closest("th[data-sort]");
      if (th) this.sortBy(th.dataset.sort);
    });
    filter.addEventListener("input", () => {
      this.filter = filter.value.trim().toUpperCase();
      this.invalidate();
    });
    starredOnly.addEventListener("click", () => {
      this.starredOnly = !this.starredOnly;
      localStorage.setItem(STORE_STARRED_ONLY, JSON.stringify(this.starredOnly));
      this.invalidate();
    });
    this.els.body.addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-symbol]");
      if (!tr) return;
      const name = tr.dataset.symbol;
      if (e.target.closest("button.star")) this.toggleStar(name);
      else if (e.target.closest("button.unsub")) this.on.unsubscribe(name);
      else {
        this.cursor = name;
        this.on.select(name);
      }
    });
    document.addEventListener("keydown", (e) => this._key(e));
    this._showSort();
    starredOnly.setAttribute("aria-pressed", String(this.starredOnly));
  }

  _key(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const inFilter = e.target === this.els.filter;
    const typing = !inFilter && e.target.closest?.("input, textarea, select, [contenteditable]");
    if (typing) return;
    if (e.key === "/" && !inFilter) {
      e.preventDefault();
      this.els.filter.focus();
      this.els.filter.select();
      return;
    }
    if (inFilter && e.key === "Escape") {
      this.els.filter.value = "";
      this.filter = "";
      this.invalidate();
      this.els.filter.blur();
      return;
    }
    const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10, Home: -Infinity, End: Infinity };
    if (e.key in moves && !(inFilter && (e.key === "Home" || e.key === "End"))) {
      e.preventDefault();
      this.moveCursor(moves[e.key]);
      if (inFilter && e.key === "ArrowDown") this.els.filter.blur();
    } else if (e.key === "Enter" && (!inFilter || this.order.length)) {
      e.preventDefault();
      this._orderNow();
      const name = this.cursor && this.rows.has(this.cursor) ? this.cursor : this.order[0]?.name;
      if (name) {
        this.cursor = name;
        this.on.select(name);
      }
      if (inFilter) this.els.filter.blur();
    }
  }

  /** Moves the keyboard cursor `by` rows (±Infinity: to an end) and shows it. */
  moveCursor(by) {
    this._orderNow();
    if (!this.order.length) return;
    const at = this.order.findIndex((r) => r.name === this.cursor);
    const from = at < 0 ? this.order.findIndex((r) => r.name === this.selected) : at;
    const to = Math.max(0, Math.min(this.order.length - 1, (from < 0 ? (by > 0 ? -1 : this.order.length) : from) + by));
    this.cursor = this.order[to].name;
    this._scrollTo(to);
    this.invalidate(false);
  }

  _scrollTo(index) {
    const rowH = this.rowH || 28;
    const headH = this.els.head.offsetHeight;
    const top = index * rowH;
    const { scroller } = this.els;
    if (top < this.scrollTop) scroller.scrollTop = top;
    else if (top + rowH + headH > this.scrollTop + this.viewH) scroller.scrollTop = top + rowH + headH - this.viewH;
    this.scrollTop = scroller.scrollTop;
  }

  sortBy(key) {
    if (!SORTS[key]) return;
    this.sortDir = key === this.sortKey ? -this.sortDir : key === "sym" ? 1 : -1;
    this.sortKey = key;
    localStorage.setItem(STORE_SORT, JSON.stringify({ key, dir: this.sortDir }));
    this._showSort();
    this.invalidate();
  }

  _showSort() {
    for (const th of this.els.head.querySelectorAll("th[data-sort]")) {
      const on = th.dataset.sort === this.sortKey;
      th.setAttribute("aria-sort", on ? (this.sortDir > 0 ? "ascending" : "descending") : "none");
    }
  }

  toggleStar(name) {
    if (this.starred.has(name)) this.starred.delete(name);
    else this.starred.add(name);
    localStorage.setItem(STORE_STARRED, JSON.stringify([...this.starred]));
    this.invalidate();
  }

  add(r) {
    this.rows.set(r.name, r);
    this.invalidate();
  }

  remove(name) {
    this.rows.delete(name);
    this.invalidate();
  }

  setSelected(name) {
    this.selected = name;
    this.invalidate(false);
  }

  /** Something changed the rows shown or their order (`order`), or only how they look. */
  invalidate(order = true) {
    // A new order rebinds every row anyway (`_orderNow`).
    if (order) this.orderDirty = true;
    else for (const el of this.pool) el.row = null;
    this.on.redraw();
  }

  _orderNow() {
    if (!this.orderDirty) return;
    this.orderDirty = false;
    this.sortedAt = performance.now();
    const f = this.filter;
    const shown = [];
    for (const r of this.rows.values()) {
      if (f && !r.name.toUpperCase().includes(f)) continue;
      if (this.starredOnly && !this.starred.has(r.name)) continue;
      shown.push(r);
    }
    const key = SORTS[this.sortKey];
    const dir = this.sortDir;
    const keyed = shown.map((r) => [key(r), r]);
    keyed.sort(([a, ra], [b, rb]) => {
      if (a === b) return ra.name < rb.name ? -1 : ra.name > rb.name ? 1 : 0;
      if (a === null || a === undefined) return 1;
      if (b === null || b === undefined) return -1;
      return (a < b ? -1 : 1) * dir;
    });
    this.order = keyed.map(([, r]) => r);
    this.els.count.textContent = `${this.order.length.toLocaleString("en-US")} of ${this.rows.size.toLocaleString("en-US")}`;
    for (const el of this.pool) el.row = null;
  }

  /**
   * Draws the rows in view that changed. `painted` collects the publish
   * times (ms) of the values this frame shows for the first time.
   */
  draw(now, painted) {
    if (this.sortKey !== "sym" && now - this.sortedAt > RESORT_MS) this.orderDirty = true;
    this._orderNow();
    const rowH = this.rowH || 28;
    const n = this.order.length;
    // Fewer rows than before (a filter): the scroller will clamp its
    // offset once the spacers shrink; the cached one is past the end.
    const top = Math.min(this.scrollTop, Math.max(0, n * rowH - this.viewH));
    const first = Math.max(0, Math.floor(top / rowH) - OVERSCAN);
    const end = Math.max(first, Math.min(n, Math.ceil((top + this.viewH) / rowH) + OVERSCAN));
    this._poolSize(end - first);
    if (first !== this.first) {
      for (const el of this.pool) el.row = null;
      this.first = first;
    }
    this._pads(first * rowH, (n - end) * rowH);
    for (let i = first; i < end; i++) this._drawRow(this.pool[i - first], this.order[i], now, painted);
    // A tint is cleared by a later frame: ask for one even if no data comes.
    if (this.pool.some((el) => el.flash !== null)) this.on.redraw();
    if (!this.rowH && this.pool.length) {
      this.rowH = this.pool[0].tr.offsetHeight;
      if (this.rowH !== rowH) this.invalidate(false);
    }
  }

  _pads(top, bottom) {
    if (top !== this.padTopH) this.els.padTop.rows[0].cells[0].style.height = `${(this.padTopH = top)}px`;
    if (bottom !== this.padBottomH) this.els.padBottom.rows[0].cells[0].style.height = `${(this.padBottomH = bottom)}px`;
  }

  _poolSize(want) {
    const body = this.els.body;
    while (this.pool.length > want) this.pool.pop().tr.remove();
    while (this.pool.length < want) {
      const tr = document.createElement("tr");
      tr.innerHTML =
        '<td class="sym"></td><td class="bid"></td><td class="ask"></td><td class="spread"></td>' +
        '<td class="last"></td><td class="chg"></td><td class="pct"></td><td class="time"></td>' +
        `<td class="spark"><canvas width="${SPARK_W}" height="${SPARK_H}"></canvas></td>` +
        '<td class="x"><button type="button" class="star" title="Watchlist"></button>' +
        '<button type="button" class="unsub" title="Unsubscribe">✕</button></td>';
      const c = tr.cells;
      body.append(tr);
      this.pool.push({
        tr,
        sym: c[0], bid: c[1], ask: c[2], spread: c[3], last: c[4], chg: c[5], pct: c[6], time: c[7],
        spark: c[8].firstChild,
        star: c[9].firstChild,
        row: null,
        qv: -1, tv: -1, sv: -1, sparkAt: 0, mid: null,
        flash: null, // tinted up (true) or down (false) until flashUntil
        flashUntil: 0,
      });
    }
  }

  _drawRow(el, r, now, painted) {
    const fresh = el.row !== r;
    if (fresh) {
      el.row = r;
      el.qv = el.tv = el.sv = -1;
      el.mid = null;
      el.tr.dataset.symbol = r.name;
      el.sym.textContent = r.name;
      const cl = el.tr.classList;
      cl.toggle("selected", r.name === this.selected);
      cl.toggle("cursor", r.name === this.cursor);
      el.star.textContent = this.starred.has(r.name) ? "★" : "☆";
      el.star.classList.toggle("on", this.starred.has(r.name));
    }
    if (el.qv !== r.qv) {
      el.tr.classList.toggle("stale", r.stale !== undefined);
      el.tr.title = r.stale !== undefined ? `stale: ${r.stale}` : "";
      if (r.bid !== null) {
        el.bid.textContent = trimDecimals(r.bid, r.pxUsed);
        el.ask.textContent = trimDecimals(r.ask, r.pxUsed);
        el.spread.textContent = trimDecimals(r.spread, r.pxUsed);
        const mid = r.bidPx + r.askPx;
        if (!fresh && el.mid !== null && mid !== el.mid) {
          // A tint for FLASH_MS, set and cleared by the frames that draw
          // the row: no animation to run every frame in between.
          const up = mid > el.mid;
          if (el.flash !== up) {
            el.tr.classList.toggle("up", up);
            el.tr.classList.toggle("down", !up);
            el.flash = up;
          }
          el.flashUntil = now + FLASH_MS;
        }
        el.mid = mid;
        if (r.quotePub && !fresh) painted.push(r.quotePub);
      } else {
        el.bid.textContent = el.ask.textContent = el.spread.textContent = "—";
      }
      el.qv = r.qv;
    }
    if (el.flash !== null && (fresh || now > el.flashUntil)) {
      el.tr.classList.remove("up", "down");
      el.flash = null;
    }
    if (el.tv !== r.tv) {
      if (r.last !== null) {
        el.last.textContent = trimDecimals(r.last, r.pxUsed);
        el.last.className = `last ${r.lastSide === "buy" ? "up-c" : r.lastSide === "sell" ? "down-c" : ""}`;
        const cls = r.chgSign > 0 ? "up-c" : r.chgSign < 0 ? "down-c" : "";
        el.chg.textContent = trimDecimals(r.chg, r.pxUsed);
        el.chg.className = `chg ${cls}`;
        el.pct.textContent = r.pct;
        el.pct.className = `pct ${cls}`;
        el.time.textContent = venueTime(r.lastTradeMs);
        if (r.tradePub && !fresh) painted.push(r.tradePub);
      } else {
        el.last.textContent = el.chg.textContent = el.pct.textContent = el.time.textContent = "—";
        el.last.className = "last";
        el.chg.className = "chg";
        el.pct.className = "pct";
      }
      el.tv = r.tv;
    }
    if (el.sv !== r.sv && (fresh || now - el.sparkAt > SPARK_MS)) {
      drawSpark(el.spark, r.spark);
      el.sv = r.sv;
      el.sparkAt = now;
    }
  }
}

function drawSpark(canvas, points) {
  const dpr = window.devicePixelRatio || 1;
  const w = SPARK_W;
  const h = SPARK_H;
  if (canvas.width !== w * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, v] of points) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const span = hi - lo || 1;
  // Fill the width once there are a few points, rather than leaving most
  // of a fresh page's sparkline empty.
  const dx = w / (Math.max(points.length, 20) - 1);
  const x = (i) => w - (points.length - 1 - i) * dx;
  const y = (v) => h - 3 - ((v - lo) / span) * (h - 6);
  const up = points[points.length - 1][1] >= points[0][1];
  g.beginPath();
  points.forEach(([, v], i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.strokeStyle = up ? "#26c281" : "#f0506e";
  g.lineWidth = 1.25;
  g.stroke();
}
