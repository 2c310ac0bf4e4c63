"""Who e-mail channels may write to: the operator's recipients policy
(`OPSPILOT_EMAIL_ALLOWED_DOMAINS`, docs/security.md).

The SMTP relay is the operator's, so without a policy a project member could make OpsPilot
relay mail to any address. The policy names the domains recipients may be in; it is checked
when a channel is created (400 naming `target`) and again at every send (a channel stored
before the policy changed sends only to the addresses still allowed).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen
class EmailDomains:
    """Allowed recipient domains. `example.com` allows exactly that domain; `*.example.com`
    any of its subdomains (not the domain itself). No entries: every domain is allowed."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> EmailDomains:
        """`"example.com, *.ops.example.com"` → EmailDomains; raises ValueError on an entry
        that is not a domain name."""
        entries = text.split(",") if isinstance(text, str) else list(text or ())
        exact: set[str] = set()
        suffixes: list[str] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            wildcard = entry.startswith("*.")
            name = entry[2:] if wildcard else entry
            if not _is_domain(name):
                raise ValueError(f"OPSPILOT_EMAIL_ALLOWED_DOMAINS entry {raw.strip()!r} "
                                 "is not a domain name (or *.domain)")
            if wildcard:
                suffixes.append("." + name)
            else:
                exact.add(name)
        return cls(frozenset(exact), tuple(suffixes))

    @property
    def restricted(self) -> bool:
        return bool(self.exact or self.suffixes)

    def allows(self, address: str) -> bool:
        if not self.restricted:
            return True
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        return domain in self.exact or any(domain.endswith(s) for s in self.suffixes)

    def refused(self, addresses: Iterable[str]) -> list[str]:
        """The addresses the policy does not allow, in their order."""
        return [a for a in addresses if not self.allows(a)]

    def describe(self) -> str:
        return ", ".join([*sorted(self.exact), *(f"*{s}" for s in self.suffixes)])


def _is_domain(name: str) -> bool:
    labels = name.split(".")
    return len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        and not label.startswith("-") and not label.endswith("-")
        for label in labels
    )


def recipients(target: str) -> list[str]:
    """The addresses of an e-mail channel's target (comma-separated)."""
    return [a.strip() for a in target.split(",") if a.strip()]
