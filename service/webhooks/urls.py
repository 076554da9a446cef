"""Which URLs a webhook may be delivered to (SSRF): pure functions over a URL and the addresses
its host resolves to; the resolver is a parameter, so tests stub DNS.

Production: ``https`` only, and neither the host (an IP literal) nor ANY address its name
resolves to may be private, loopback, link-local, reserved, multicast, unspecified or otherwise
not global (IPv4, IPv6, and IPv4 inside IPv6). Development also allows ``http`` and loopback
(receivers on 127.0.0.1). Never userinfo. Checked at registration and again before each
delivery, whose connection then goes to the address that was checked (a name that resolves
differently a moment later, DNS rebinding, is not asked again).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses a connection could go to.
Resolver = Callable[[str, int], list[str]]


class UrlRefusedError(ValueError):
    """The URL may not receive webhooks; the message says why (no secret in it)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its parts and the allowed addresses its host resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for a TCP connection to ``host:port``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: IpAddress, *, allow_loopback: bool) -> str | None:
    """Why a connection to ``address`` is refused, or None when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped, allow_loopback=allow_loopback)
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "a non-global address"),
    )
    for refused, why in checks:
        if refused:
            return why
    return None


def parse(url: str, *, production: bool) -> tuple[str, str, int]:
    """The URL's scheme, host and port, or UrlRefusedError for a URL that no DNS answer could
    make acceptable (scheme, userinfo, no host, too long)."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefusedError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UrlRefusedError("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefusedError(f"not a valid URL: {error}") from None
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        raise UrlRefusedError(f"the scheme must be {' or '.join(allowed)}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UrlRefusedError("the URL may not carry a user name or password")
    host = parts.hostname
    if not host:
        raise UrlRefusedError("the URL has no host")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check(url: str, *, production: bool, resolver: Resolver = system_resolver) -> Target:
    """The URL as a delivery target, or UrlRefusedError saying why it is refused."""
    scheme, host, port = parse(url, production=production)
    allow_loopback = not production
    address = literal(host)
    if address is not None:
        names = [str(address)]
    else:
        try:
            names = resolver(host, port)
        except (OSError, UnicodeError) as error:
            raise UrlRefusedError(f"the host {host!r} does not resolve: {error}") from None
        if not names:
            raise UrlRefusedError(f"the host {host!r} does not resolve")
    for name in names:
        resolved = literal(name.split("%", 1)[0])  # an IPv6 zone id
        if resolved is None:
            raise UrlRefusedError(f"the host {host!r} resolved to {name!r}, not an address")
        why = refusal(resolved, allow_loopback=allow_loopback)
        if why is not None:
            raise UrlRefusedError(f"the host {host!r} resolves to {why} ({resolved})")
    return Target(url, scheme, host, port, tuple(names))
