"""tickwire: a client for the tickwire market-data server.

Live feeds over WebSocket (`Client`), replays of the server's recordings
(`recordings`, `replay`, `replay_dataframe`), and the decoder of both
subprotocols (`Decoder`), with prices and sizes as `decimal.Decimal`.
"""

from .client import Client, Gap, HttpError, recordings, replay, replay_dataframe
from .decode import (
    Bar,
    Book,
    Candles,
    Control,
    DecodeError,
    Decoder,
    Quote,
    Status,
    Symbol,
    Trade,
)

__all__ = [
    "Bar", "Book", "Candles", "Client", "Control", "DecodeError", "Decoder", "Gap",
    "HttpError", "Quote", "Status", "Symbol", "Trade", "recordings", "replay",
    "replay_dataframe",
]
