"""permessage-deflate with a real third-party client: Python `websockets`,
which offers the extension by default and compresses what it sends.

Starts `tickwire serve` (TICKWIRE_BIN) on a synthetic feed with books, then
connects two clients of `tickwire.v1.json` at once: `websockets` with its
default compression, and one with compression off. Checks that the first
negotiated the extension (and the second did not), that the server
understood its compressed subscribe, and that every `book` message both got
for the same sequence is the same JSON text once `websockets` has inflated
it: the server's compressed frames carry exactly the plain frames' bytes.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request

import websockets

BIN = os.environ["TICKWIRE_BIN"]
SUBSCRIBE = {"op": "subscribe", "symbols": ["*"], "channels": ["book.20"], "id": 1}


async def collect(url, compression, want):
    """The first `want` book messages a client gets, by seq, as text."""
    books = {}
    async with websockets.connect(
        url, subprotocols=["tickwire.v1.json"], compression=compression, max_size=None
    ) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send(json.dumps(SUBSCRIBE))
        ack = None
        while len(books) < want:
            text = await asyncio.wait_for(ws.recv(), 10)
            msg = json.loads(text)
            if msg["type"] == "ack":
                ack = msg
            elif msg["type"] == "book":
                assert len(msg["bids"]) == 20 and len(msg["asks"]) == 20, text[:200]
                books[msg["seq"]] = text
            elif msg["type"] == "error":
                raise AssertionError(f"refused: {text}")
        assert ack is not None and ack["id"] == 1, ack
        return extensions, books


async def main():
    server = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0",
         "--feed", "synthetic:symbols=2,rate=200,book=50"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = ""
        while "serving on" not in line:
            line = server.stdout.readline()
            assert line, "tickwire exited before listening"
        host = re.search(r"serving on http://([\d.]+:\d+)/", line).group(1)
        url = f"ws://{host}/ws"
        (ext_on, on), (ext_off, off) = await asyncio.gather(
            collect(url, "deflate", 200), collect(url, None, 200)
        )
        assert ext_on.startswith(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ), ext_on
        assert ext_off == "", ext_off
        common = sorted(set(on) & set(off))
        assert len(common) >= 100, f"only {len(common)} messages in common"
        for seq in common:
            assert on[seq] == off[seq], f"seq {seq} differs"
        with urllib.request.urlopen(f"http://{host}/metrics") as r:
            metrics = r.read().decode()
        print(f"python websockets {websockets.__version__}: {len(common)} book messages "
              f"identical with and without permessage-deflate")
        assert re.search(r"^tickwire_inflated_too_big_closes_total 0$", metrics, re.M)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
