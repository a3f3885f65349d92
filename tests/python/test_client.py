"""The Python client (clients/python, installed from the local path) against
a real `tickwire serve --recordings DIR`: the catalog, a replay session
compared update by update with the recording read here independently
(json and decimal, no tickwire code), the same through pandas, and a live
subscription with exact decimals.
"""

import asyncio
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal

import tickwire

BIN = os.environ["TICKWIRE_BIN"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FEEDS = os.path.join(ROOT, "feeds")
BUNDLED = os.path.join(FEEDS, next(f for f in os.listdir(FEEDS) if f.endswith(".jsonl.gz")))


def recorded(symbol, start, end):
    """The recording's quotes and trades of `symbol` received in [start, end),
    as ("quote", bid, bid_size, ask, ask_size) / ("trade", price, size)."""
    out = []
    with gzip.open(BUNDLED, "rt") as f:
        for line in f:
            ts, _, payload = line.partition(" ")
            if not payload or not (start <= int(ts) < end):
                continue
            d = json.loads(payload).get("data", {})
            if d.get("s") != symbol:
                continue
            if d.get("e") == "trade":
                out.append(("trade", Decimal(d["p"]), Decimal(d["q"])))
            elif "b" in d and "a" in d and isinstance(d["b"], str):
                out.append(("quote", Decimal(d["b"]), Decimal(d["B"]), Decimal(d["a"]), Decimal(d["A"])))
    return out


def served(m):
    if isinstance(m, tickwire.Trade):
        return ("trade", m.price, m.size)
    return ("quote", m.bid, m.bid_size, m.ask, m.ask_size)


async def main():
    rec = tempfile.mkdtemp(prefix="tickwire-py-")
    shutil.copy(BUNDLED, os.path.join(rec, "bundled.jsonl.gz"))
    server = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", "--recordings", rec],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = ""
        while "serving on" not in line:
            line = server.stdout.readline()
            assert line, "tickwire exited before listening"
        port = re.search(r":(\d+)/", line).group(1)
        base = f"http://127.0.0.1:{port}"

        # The catalog.
        listed = await tickwire.recordings(base)
        assert [r["name"] for r in listed] == ["bundled.jsonl.gz"], listed
        assert "ETHUSDT" in listed[0]["symbols"]

        # A replay window of one symbol, update by update, exact.
        start, end = 1_723_161_260_000_000_000, 1_723_161_275_000_000_000
        got = [m async for m in tickwire.replay(
            "bundled.jsonl.gz", base, symbols=["ETHUSDT"],
            start="2024-08-08T23:54:20Z", end=str(end))]
        defs = [m for m in got if isinstance(m, tickwire.Symbol)]
        data = [m for m in got if isinstance(m, (tickwire.Quote, tickwire.Trade))]
        assert [d.symbol for d in defs] == ["ETHUSDT"], defs
        want = recorded("ETHUSDT", start, end)
        assert len(want) > 100, len(want)
        assert [served(m) for m in data] == want
        assert all(isinstance(m.publish_ts, int) for m in data)

        # The same through pandas.
        frame = await tickwire.replay_dataframe(
            "bundled.jsonl.gz", base=base, symbols=["ETHUSDT"], start=start, end=end)
        assert len(frame) == len(want), len(frame)
        assert list(frame["type"].unique()) and set(frame["symbol"]) == {"ETHUSDT"}

        # A refused replay says why.
        try:
            [m async for m in tickwire.replay("../etc/passwd", base)]
            raise AssertionError("a name outside the directory was replayed")
        except tickwire.HttpError as e:
            assert e.status == 400, e

        # Live: exact decimals from the binary subprotocol.
        client = tickwire.Client(f"ws://127.0.0.1:{port}/ws", ["BTCUSDT"])
        live = []
        async def take():
            async for m in client:
                if isinstance(m, (tickwire.Quote, tickwire.Trade)):
                    live.append(m)
                    if len(live) == 20:
                        client.close()
        await asyncio.wait_for(take(), 30)
        quotes = [m for m in live if isinstance(m, tickwire.Quote)]
        assert quotes and all(q.bid.as_tuple().exponent == -8 for q in quotes), quotes[:1]
        assert all(q.symbol == "BTCUSDT" for q in live)
        print(f"python client: {len(data)} replayed updates equal the recording's, "
              f"a DataFrame of {len(frame)} rows, {len(live)} live updates")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(rec, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
