"""TELEGRAM_PROXY and DISCORD_PROXY: one proxy URL per bot, checked when the settings are read.

Each bot hands its proxy to its own library (`bots.telegram.proxy`, `bots.discord.proxy`);
both reach it through aiohttp-socks, so a proxy behaves the same for either bot. The
providers do not use these: their shared HTTP pool follows HTTPS_PROXY, ALL_PROXY and
NO_PROXY, as most HTTP tools do.

What is accepted, and why:
- `http://host:port`: an HTTP proxy. Every connection goes through it as a CONNECT tunnel,
  https:// and wss:// as well as plain http:// (which is what the local fakes in the tests speak).
- `socks4://`, `socks5://`, `socks5h://`: SOCKS. The proxy always resolves host names (SOCKS4a,
  SOCKS5 with a domain name), as aiogram does for Telegram: a machine that needs a proxy often
  has no DNS of its own, and no look-up leaks around the proxy. So `socks5://` and
  `socks5h://` (the usual way to ask for exactly that) mean the same here.
- Credentials in the URL, `socks5://user:password@host:1080`, percent-encoded where they hold
  `@`, `:` or `/`. The password is a secret: kept as a `SecretStr`, hidden from every log line
  (`bots.logs.settings_secrets`), and left out of `address`, the form log lines use.
- `https://` (TLS to the proxy itself) is refused: aiogram gives the URL to aiohttp-socks with
  no way to ask for TLS to the proxy, so it could work for one bot only.
"""

from __future__ import annotations

from typing import Any, Literal, get_args
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Scheme = Literal["http", "socks4", "socks5", "socks5h"]
SCHEMES: tuple[str, ...] = get_args(Scheme)

#: How a proxy URL is written, for every message about a wrong one.
FORM = (
    "write it as scheme://[user:password@]host:port with scheme "
    f"{', '.join(SCHEMES)} (e.g. socks5://127.0.0.1:1080, http://proxy.lan:3128)"
)
HTTPS_REFUSED = (
    "https:// (TLS to the proxy) is not supported; an HTTP proxy is written http:// even "
    "though the traffic it carries is HTTPS"
)


class ProxyURL(BaseModel):
    """A proxy, parsed from its URL; the settings hold one per bot (or None)."""

    model_config = ConfigDict(frozen=True)

    scheme: Scheme
    host: str
    port: int = Field(gt=0, lt=65536)
    username: str | None = None
    password: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, value: Any) -> Any:
        """Accept the URL as the environment gives it. Messages never quote the URL: it may
        hold a password."""
        if not isinstance(value, str):
            return value
        if "://" not in value:
            raise ValueError(f"the scheme is missing: {FORM}")
        parts = urlsplit(value.strip())
        scheme = parts.scheme.lower()
        if scheme == "https":
            raise ValueError(HTTPS_REFUSED)
        if scheme not in SCHEMES:
            raise ValueError(f"unknown proxy scheme {scheme!r}: {FORM}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"the port is not a number from 1 to 65535: {FORM}") from None
        if not parts.hostname or port is None:
            raise ValueError(f"the host and the port are both needed: {FORM}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"a proxy URL has no path, query or fragment: {FORM}")
        return {
            "scheme": scheme,
            "host": parts.hostname,
            "port": port,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
        }

    @property
    def address(self) -> str:
        """The URL without the password: what log lines and messages show."""
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        return f"{self.scheme}://{user}{self._host_port}"

    def url(self, scheme: str | None = None) -> str:
        """The whole URL, password included, for a library that takes one (as `scheme`)."""
        credentials = ""
        if self.username or self.password:
            credentials = quote(self.username or "", safe="")
            if self.password:
                credentials += ":" + quote(self.password.get_secret_value(), safe="")
            credentials += "@"
        return f"{scheme or self.scheme}://{credentials}{self._host_port}"

    def secrets(self) -> list[str]:
        """The password as given and as it appears in `url()`, for the log's redaction."""
        if self.password is None:
            return []
        password = self.password.get_secret_value()
        return [password, quote(password, safe="")]

    @property
    def _host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"{host}:{self.port}"
