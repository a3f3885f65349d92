'use strict';
// The send time the node peers stamp in each tick: CLOCK_REALTIME in
// nanoseconds, the clock `tickwire bench` reads on receipt.
//
// Not performance.timeOrigin + performance.now(): timeOrigin is taken once,
// at start, from two clocks read one after the other, and a preemption
// between the reads (this VM loses a vCPU for 100 µs or more now and then)
// leaves every stamp of that process off by as much. It happened to one
// uWS run in three here: 97 % of its latencies came out negative, and the
// rest too low. Instead: at a few edges of Date.now()'s millisecond, read
// the monotonic clock just after the edge is seen; each gives a lower
// bound of the offset between the two clocks, exact when the read follows
// the edge at once, so the largest of them is kept.

const EDGES = 16;

function calibrate() {
  let best = null;
  for (let i = 0; i < EDGES; i++) {
    const start = Date.now();
    let ms;
    let hr;
    do {
      ms = Date.now();
      hr = process.hrtime.bigint();
    } while (ms === start);
    const offset = BigInt(ms) * 1000000n - hr;
    if (best === null || offset > best) best = offset;
  }
  return best;
}

const OFFSET_NS = calibrate();

/** CLOCK_REALTIME now, in nanoseconds (a BigInt). */
function nowNs() {
  return OFFSET_NS + process.hrtime.bigint();
}

module.exports = { nowNs };
