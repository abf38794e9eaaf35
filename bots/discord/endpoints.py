"""Where discord.py sends its REST calls and opens its gateway.

discord.py has no constructor argument for either, so this sets the two class attributes
it reads, once, before the client logs in:

- `discord.http.Route.BASE` (REST, version path included, default
  `https://discord.com/api/v10`). Every request is a `Route`, whose URL is `BASE + path`
  when the Route is built, including interaction callbacks and webhook follow-ups. This is
  the attribute discord.py's own `_set_api_version` rewrites.
- `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` (default `wss://gateway.discord.gg/`).
  A non-sharded `Client.connect()` opens this URL directly (it does not ask
  `GET /gateway/bot`) and falls back to it when a session is invalidated; resumes go to the
  `resume_gateway_url` the server sent in READY.

Both are process-wide, which matches Parley: one process runs one Discord bot. The values come
from `DISCORD_API_BASE` and `DISCORD_GATEWAY_URL` (a Discord-compatible server, or the fake
in tests). discord.py adds `?v=10&encoding=json&compress=zlib-stream` to the gateway URL
itself; a compatible server must speak zlib-stream (zstd-stream when the `zstandard` package is
installed, since discord.py then asks for that instead).
"""

from __future__ import annotations

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route


def use_endpoints(api_base: str, gateway_url: str) -> None:
    """Point discord.py at `api_base` (REST, with /api/vN) and `gateway_url` (WebSocket)."""
    Route.BASE = api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
