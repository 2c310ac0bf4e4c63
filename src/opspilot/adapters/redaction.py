"""Keeping secrets out of log lines and error texts: URLs lose their credentials, path and
query (a Slack webhook URL is a credential; other webhooks carry tokens in either)."""

from __future__ import annotations

import logging
import re

# scheme://[userinfo@]host[:port] then the rest of the URL up to a quote, space or bracket
_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/\s'\"<>@]*@)?"
                  r"(?P<host>[^/\s'\"<>?#]+)(?P<rest>[^\s'\"<>)\]]*)")


def redact_urls(text: str) -> str:
    def shorter(match: re.Match[str]) -> str:
        tail = "/…" if match["rest"] not in ("", "/") else match["rest"]
        return f"{match['scheme']}{match['host']}{tail}"

    return _URL.sub(shorter, text)


class RedactingFormatter(logging.Formatter):
    """Every formatted record, traceback included, with its URLs redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))
