// The dashboard at market scale, measured (docs/BENCHMARKS.md; not a
// test): a tickwire serving a synthetic feed of N symbols, the page open in
// headless Chromium, and for `SECONDS` after a warm-up:
// - frames painted per second and the longest frame (requestAnimationFrame
//   gaps, counted in the page);
// - publish-to-paint latency as the page's own status bar shows it (p50,
//   p99 of the last second), sampled each second;
// - updates the server conflated for the page (the page's counter).
//
// node web/bench/scale.mjs [SYMBOLS=1000] [RATE=20000] [RUNS=3]
// TICKWIRE_BIN (default target/release/tickwire), CHROMIUM, SECONDS (10).
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.TICKWIRE_BIN ?? join(ROOT, "target", "release", "tickwire");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SECONDS = Number(process.env.SECONDS_MEASURED ?? process.env.SECONDS ?? 10);
const [symbols = 1000, rate = 20000, runs = 3] = process.argv.slice(2).map(Number);

async function serve() {
  const feed = `synthetic:symbols=${symbols},rate=${rate}`;
  // `*` counts every symbol against the subscription limit.
  const limit = String(Math.max(1024, symbols + 16));
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--feed", feed, "--max-subscriptions", limit], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  // Read to the end: a pipe left full would stop the server.
  let out = "";
  const port = await new Promise((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/serving on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`tickwire exited (${code}): ${out}`)));
  });
  return { child, port };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function run(browser) {
  const { child, port } = await serve();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(`http://127.0.0.1:${port}/${process.env.QUERY ?? ""}`);
    if (process.env.CSS) await page.addStyleTag({ content: process.env.CSS });
    await page.waitForFunction(() => document.querySelectorAll("#rows tr").length > 0, null, { timeout: 30_000 }).catch(async (e) => {
      throw new Error(`no rows: ${await page.evaluate(() => [document.getElementById("notice").textContent, document.getElementById("s-state").textContent, window.tickwire.messages])}`);
    });
    await page.waitForTimeout(3_000);
    await page.evaluate(() => {
      window.__frames = { n: 0, longest: 0, last: performance.now() };
      const tick = (t) => {
        const f = window.__frames;
        f.longest = Math.max(f.longest, t - f.last);
        f.last = t;
        f.n++;
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    const conflatedBefore = await page.evaluate(() => window.tickwire.conflatedUpdates);
    const p50s = [];
    const p99s = [];
    for (let s = 0; s < SECONDS; s++) {
      await page.waitForTimeout(1_000);
      const [p50, p99] = await page.evaluate(() => [
        parseFloat(document.getElementById("s-p50").textContent),
        parseFloat(document.getElementById("s-p99").textContent),
      ]);
      if (Number.isFinite(p50)) p50s.push(p50);
      if (Number.isFinite(p99)) p99s.push(p99);
    }
    const f = await page.evaluate(() => window.__frames);
    const conflated = (await page.evaluate(() => window.tickwire.conflatedUpdates)) - conflatedBefore;
    const rows = await page.evaluate(() => document.getElementById("grid-count").textContent);
    const domRows = await page.evaluate(() => document.querySelectorAll("#rows tr").length);
    const gaps = await page.evaluate(() => window.tickwire.gaps);
    await page.close();
    return { fps: f.n / SECONDS, longest: f.longest, p50: median(p50s), p99: Math.max(...p99s), p99s: median(p99s), conflated, rows, domRows, gaps };
  } finally {
    child.kill("SIGTERM");
    await once(child, "exit");
  }
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
try {
  for (let i = 1; i <= runs; i++) {
    const r = await run(browser);
    console.log(
      `${symbols} symbols, ${rate} updates/s, run ${i}: ${r.fps.toFixed(1)} frames/s, longest frame ${r.longest.toFixed(0)} ms, ` +
        `publish-to-paint p50 ${r.p50} ms (median of seconds), p99 ${r.p99s} ms (median of seconds), ${r.p99} ms (worst second), ` +
        `conflated ${r.conflated}, gaps ${r.gaps}, symbols ${r.rows}, rows in the DOM ${r.domRows}`,
    );
  }
} finally {
  await browser.close();
}
