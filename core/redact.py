"""The one rule for hiding secrets in text that may reach a log, a terminal or a chat user.

Two places need it: a provider hides its API key in the errors it raises (a server may echo
the key back), and the `parley` command's log handler hides every configured token and key
(aiohttp puts the Telegram token, which is part of the URL, into its errors). Both use
`Redactor`, so a secret is hidden, or not, by the same rule everywhere.
"""

from __future__ import annotations

#: What a secret is replaced with.
REDACTED = "***"
#: Shorter values are not treated as secrets: replacing every "abc" in a message would garble
#: ordinary text, and no real API key or bot token is that short. Four is the lower of the two
#: minimums Parley used to have (providers 4, logs 6), so nothing hidden before is shown now;
#: a dummy key of four or five characters given to a local server is hidden too, which costs
#: only readability.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces each secret given (those of `MIN_SECRET_LENGTH` or more) with `***`."""

    __slots__ = ("_secrets",)

    def __init__(self, *secrets: str | None) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        kept = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH}
        self._secrets = sorted(kept, key=len, reverse=True)

    def __bool__(self) -> bool:
        """False when there is nothing to hide, so callers can skip work."""
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text
