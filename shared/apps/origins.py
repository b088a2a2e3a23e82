"""Which browser origins may open a WebSocket to an app: the `allowed_origins` list (docs/apps.md, "Origins").

A pattern is `*` (any origin), a full origin `scheme://host[:port]`, or `host[:port]` for any scheme;
the host may start with `*.` to match any subdomain at any depth (`*.example.com` matches
`a.example.com` and `a.b.example.com`, not `example.com`). Ports compare as the browser writes them in
the `Origin` header, which leaves out default ports. Matching is case-insensitive. With a non-empty
list, a handshake without an `Origin` header is refused: browsers always send one.

Patterns are compiled once per app into sets and suffixes, so the handshake check is a few string
operations (no Redis, no regular expressions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ANY = "*"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9_.\-\[\]:]+$")


class OriginPolicy:
    """A compiled `allowed_origins` list; `allows(origin)` is the handshake check."""

    __slots__ = ("_exact", "_hosts", "_wildcards", "allow_any", "patterns")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        """Raises ValueError naming the first malformed pattern."""
        self.patterns = tuple(patterns)
        exact: set[str] = set()
        hosts: set[str] = set()
        wildcards: list[tuple[str | None, str]] = []
        allow_any = not self.patterns
        for raw in self.patterns:
            pattern = raw.strip().lower().removesuffix("/")
            if pattern == ANY:
                allow_any = True
                continue
            scheme, sep, host = pattern.rpartition("://")
            if sep and not _SCHEME.match(scheme):
                raise ValueError(f"'{raw}' has an invalid scheme")
            if not host or "/" in host or not _HOST.match(host) or "*" in host[1:]:
                raise ValueError(f"'{raw}' is not an origin ('https://app.example.com', "
                                 "'*.example.com', 'localhost:3000' or '*')")
            if host.startswith("*."):
                wildcards.append((scheme or None, host[1:]))
            elif sep:
                exact.add(f"{scheme}://{host}")
            else:
                hosts.add(host)
        self.allow_any = allow_any
        self._exact = frozenset(exact)
        self._hosts = frozenset(hosts)
        self._wildcards = tuple(wildcards)

    def allows(self, origin: str | None) -> bool:
        if self.allow_any:
            return True
        if not origin:
            return False
        origin = origin.lower()
        if origin in self._exact:
            return True
        scheme, _, host = origin.rpartition("://")
        if host in self._hosts:
            return True
        for want_scheme, suffix in self._wildcards:
            if host.endswith(suffix) and len(host) > len(suffix) and want_scheme in (None, scheme):
                return True
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OriginPolicy) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def __repr__(self) -> str:
        return f"OriginPolicy({list(self.patterns)!r})"


ANY_ORIGIN = OriginPolicy()
