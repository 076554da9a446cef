"""Which URLs a webhook may be delivered to (SSRF): pure functions over a URL and the addresses
its host resolves to; the resolver is a parameter, so tests stub DNS.

Production: ``https`` only, and neither the host (an IP literal) nor ANY address its name
resolves to may fall in a deny range. The ranges are listed here, explicitly (the IANA
special-purpose registries: private, shared, loopback, link-local, documentation, benchmarking,
multicast, reserved), with every IPv6 form that can carry traffic to an IPv4 or a local network:
IPv4-mapped (checked as the IPv4 it carries), IPv4-compatible, IPv4-translated, NAT64 (both
prefixes), Teredo, site-local, unique-local, and 6to4 (checked as the IPv4 it embeds). The
stdlib's ``is_global`` is a second net behind them, not the policy: its tables change between
Python versions and called ``fec0::/10`` and 6to4 global. Development also allows ``http`` and
loopback (receivers on 127.0.0.1). Never userinfo. Checked at registration and again before
each delivery, whose connection then goes to the address that was checked (a name that resolves
differently a moment later, DNS rebinding, is not asked again).

No refusal names an address a name resolved to: a tenant could otherwise map internal DNS
names by registering them and reading the 422.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
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


class ResolveTimeoutError(OSError):
    """The resolver did not answer in time."""


def resolve_within(resolver: Resolver, host: str, port: int, timeout_s: float) -> list[str]:
    """``resolver(host, port)`` given at most ``timeout_s``: ``getaddrinfo`` has no timeout of
    its own and cannot be cancelled, so it runs in a daemon thread that is abandoned (it ends
    when the system resolver gives up) if the time runs out."""
    result: list[list[str]] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(resolver(host, port))
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)

    thread = threading.Thread(target=run, name="webhook-dns", daemon=True)
    thread.start()
    thread.join(max(timeout_s, 0.0))
    if thread.is_alive():
        raise ResolveTimeoutError(f"no DNS answer within {timeout_s:.3g} s")
    if failure:
        raise failure[0]
    return result[0]


def _v4(*cidrs: str) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(c) for c in cidrs)


def _v6(*cidrs: str) -> tuple[ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.IPv6Network(c) for c in cidrs)


LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
LOOPBACK_V6 = ipaddress.IPv6Network("::1/128")
#: IPv4 ranges no webhook may reach (RFC 6890 and its updates), loopback aside.
DENY_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (net, why)
    for nets, why in (
        (_v4("0.0.0.0/8"), "an unspecified or this-network address"),
        (_v4("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address"),
        (_v4("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
        (_v4("169.254.0.0/16"), "a link-local address"),
        (_v4("192.0.0.0/24"), "an IETF protocol address"),
        (_v4("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"), "a documentation address"),
        (_v4("192.88.99.0/24"), "a 6to4 relay address"),
        (_v4("198.18.0.0/15"), "a benchmarking address"),
        (_v4("224.0.0.0/4"), "a multicast address"),
        (_v4("240.0.0.0/4"), "a reserved or broadcast address"),
    )
    for net in nets
)
#: IPv6 ranges no webhook may reach, loopback aside; the IPv4-mapped range and 6to4 are
#: checked by the IPv4 they carry (:func:`refusal`) and are not here. Global unicast is
#: 2000::/3; everything outside it that is not named above is reserved.
DENY_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (net, why)
    for nets, why in (
        (_v6("::/128"), "an unspecified address"),
        (_v6("::/96"), "an IPv4-compatible address"),
        (_v6("::ffff:0:0:0/96"), "an IPv4-translated address"),
        (_v6("64:ff9b::/96", "64:ff9b:1::/48"), "a NAT64 address"),
        (_v6("100::/64"), "a discard-only address"),
        (_v6("2001::/32"), "a Teredo address"),
        (_v6("2001::/23"), "an IETF protocol address"),
        (_v6("2001:db8::/32", "3fff::/20"), "a documentation address"),
        (_v6("5f00::/16"), "a segment-routing address"),
        (_v6("fc00::/7"), "a unique local address"),
        (_v6("fe80::/10"), "a link-local address"),
        (_v6("fec0::/10"), "a site-local address"),
        (_v6("ff00::/8"), "a multicast address"),
        (_v6("::/3", "4000::/2", "8000::/1"), "a reserved address"),
    )
    for net in nets
)
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def refusal(address: IpAddress, *, allow_loopback: bool) -> str | None:
    """Why a connection to ``address`` is refused (a phrase that never quotes the address), or
    None when it is allowed."""
    deny: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped, allow_loopback=allow_loopback)
        if address in SIX_TO_FOUR:  # 2002:AABB:CCDD::/48 routes to the IPv4 AA.BB.CC.DD
            embedded = address.sixtofour
            assert embedded is not None
            why = refusal(embedded, allow_loopback=False)
            return None if why is None else f"a 6to4 address wrapping {why}"
        if address in LOOPBACK_V6:
            return None if allow_loopback else "a loopback address"
        deny = DENY_V6
    else:
        if address in LOOPBACK_V4:
            return None if allow_loopback else "a loopback address"
        deny = DENY_V4
    for network, why in deny:
        if address in network:
            return why
    # A second net: whatever the running Python's tables call non-global.
    if address.is_private or address.is_reserved or not address.is_global:
        return "a non-global address"
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


def check(
    url: str,
    *,
    production: bool,
    resolver: Resolver = system_resolver,
    timeout_s: float | None = None,
) -> Target:
    """The URL as a delivery target, or UrlRefusedError saying why it is refused. With
    ``timeout_s`` the DNS lookup gets that long (:func:`resolve_within`); ResolveTimeoutError
    when it takes longer."""
    scheme, host, port = parse(url, production=production)
    allow_loopback = not production
    address = literal(host)
    if address is not None:
        names = [str(address)]
    else:
        try:
            if timeout_s is None:
                names = resolver(host, port)
            else:
                names = resolve_within(resolver, host, port, timeout_s)
        except ResolveTimeoutError:
            raise
        except (OSError, UnicodeError):
            raise UrlRefusedError(f"the host {host!r} does not resolve") from None
        if not names:
            raise UrlRefusedError(f"the host {host!r} does not resolve")
    for name in names:
        resolved = literal(name.split("%", 1)[0])  # an IPv6 zone id
        if resolved is None:
            raise UrlRefusedError(f"the host {host!r} resolved to something not an address")
        why = refusal(resolved, allow_loopback=allow_loopback)
        if why is not None:
            raise UrlRefusedError(f"the host {host!r} resolves to {why}")
    return Target(url, scheme, host, port, tuple(names))
