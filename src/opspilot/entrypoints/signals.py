"""How a long-running command waits: until SIGINT or SIGTERM arrives (then it shuts down)."""

from __future__ import annotations

import asyncio
import signal


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
