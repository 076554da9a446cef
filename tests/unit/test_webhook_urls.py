"""The webhook URL policy (SSRF) as pure functions, DNS stubbed: production wants https and a
host whose every address is global; development also allows http and loopback; never
userinfo. A refused URL at delivery time is a failed attempt that says why."""

from __future__ import annotations

import uuid

import httpx
import pytest

from service.webhooks import delivery, urls


def resolving(*addresses: str) -> urls.Resolver:
    def resolve(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolve


def failing(_host: str, _port: int) -> list[str]:
    raise OSError("Name or service not known")


PUBLIC = resolving("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
REFUSED_ADDRESSES = [
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "127.0.0.1",  # loopback
    "169.254.169.254",  # link-local: the cloud metadata service
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "100.64.0.1",  # shared address space (carrier-grade NAT): not global
    "::1",
    "::",
    "fe80::1",
    "fc00::1",  # unique local
    "ff02::1",
    "::ffff:10.0.0.1",  # IPv4 inside IPv6
    "::ffff:127.0.0.1",
]


def test_production_accepts_https_to_a_public_host() -> None:
    target = urls.check("https://hooks.example.com/x?y=1", production=True, resolver=PUBLIC)
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 443)
    assert target.addresses == ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_production_refuses_a_host_resolving_to_a_non_global_address(address: str) -> None:
    with pytest.raises(urls.UrlRefusedError, match="resolves to"):
        urls.check("https://hooks.example.com/", production=True, resolver=resolving(address))


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_every_resolved_address_is_checked(address: str) -> None:
    mixed = resolving("93.184.216.34", address)
    with pytest.raises(urls.UrlRefusedError):
        urls.check("https://hooks.example.com/", production=True, resolver=mixed)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://10.0.0.1/x",
        "https://[::1]:8443/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:192.168.0.1]/",
    ],
)
def test_production_refuses_ip_literals_in_those_ranges(url: str) -> None:
    with pytest.raises(urls.UrlRefusedError):
        urls.check(url, production=True, resolver=failing)  # no DNS for a literal


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/", "scheme must be https"),
        ("ftp://hooks.example.com/", "scheme"),
        ("https://user:pw@hooks.example.com/", "user name or password"),
        ("https://user@hooks.example.com/", "user name or password"),
        ("https:///nohost", "no host"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com/\nx", "control"),
        ("https://hooks.example.com/" + "a" * 3000, "longer"),
    ],
)
def test_production_refuses_bad_urls(url: str, why: str) -> None:
    with pytest.raises(urls.UrlRefusedError, match=why):
        urls.check(url, production=True, resolver=PUBLIC)


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(urls.UrlRefusedError, match="does not resolve"):
        urls.check("https://nowhere.invalid/", production=True, resolver=failing)


def test_development_allows_http_and_loopback_only() -> None:
    assert urls.check("http://127.0.0.1:8080/hook", production=False).port == 8080
    assert urls.check("http://[::1]:8080/hook", production=False).host == "::1"
    local = urls.check("http://localhost:9/", production=False, resolver=resolving("127.0.0.1"))
    assert local.addresses == ("127.0.0.1",)
    for address in ("10.0.0.1", "169.254.169.254", "0.0.0.0"):
        with pytest.raises(urls.UrlRefusedError):
            urls.check(f"http://{address}/", production=False)
    with pytest.raises(urls.UrlRefusedError, match="user name"):
        urls.check("http://a:b@127.0.0.1/", production=False)


def _policy(timeout_s: float) -> delivery.DeliveryPolicy:
    return delivery.DeliveryPolicy(
        timeout_s=timeout_s,
        lease_s=2,
        backoff_s=1,
        backoff_max_s=1,
        max_attempts=3,
        secret_overlap_s=0,
        production=True,
    )


def _claimed(url: str) -> delivery.Claimed:
    return delivery.Claimed(
        delivery_id=uuid.uuid4(),
        lease_id=uuid.uuid4(),
        url=url,
        secrets=("whsec_x",),
        event_id="evt_1",
        event_type="deletion.completed",
        body=b"{}",
    )


def test_a_refused_url_at_delivery_time_is_a_failed_attempt_saying_why() -> None:
    """Registered when the name was public; by delivery time it resolves to a private address
    (DNS rebinding): no connection is made, the attempt's error says why."""
    policy = _policy(timeout_s=1)
    claimed = _claimed("https://hooks.example.com/x")
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    ok = delivery.post(claimed, policy, client, resolver=PUBLIC)
    assert ok.ok and len(sent) == 1
    refused = delivery.post(claimed, policy, client, resolver=resolving("10.0.0.7"))
    assert refused.status_code is None and not refused.ok
    assert refused.error is not None and "refused" in refused.error and "private" in refused.error
    assert len(sent) == 1  # nothing was sent


def test_the_connection_goes_to_the_checked_address() -> None:
    """The POST is made to the address the policy checked, with the name in `Host` and as the
    TLS server name: a second DNS answer cannot redirect it."""
    target = urls.check("https://hooks.example.com:8443/x?q=1", production=True, resolver=PUBLIC)
    url, headers, extensions = delivery._pinned(target)
    assert url == "https://93.184.216.34:8443/x?q=1"
    assert headers == {"Host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
    v6 = urls.check("http://h.example/", production=False, resolver=resolving("2606:2800::1"))
    assert delivery._pinned(v6)[0] == "http://[2606:2800::1]/"


def test_backoff_is_exponential_with_equal_jitter_and_capped() -> None:
    assert delivery.backoff(1, 2.0, 100.0, lambda: 1.0) == 2.0
    assert delivery.backoff(3, 2.0, 100.0, lambda: 1.0) == 8.0
    assert delivery.backoff(3, 2.0, 100.0, lambda: 0.0) == 4.0  # half at least
    assert delivery.backoff(3, 2.0, 100.0, lambda: 0.5) == 6.0
    assert delivery.backoff(30, 2.0, 100.0, lambda: 1.0) == 100.0
    assert delivery.backoff(1000, 2.0, 100.0, lambda: 0.0) == 50.0


#: Addresses the stdlib calls global (or only "reserved") that reach private IPv4 or a local
#: network: the policy's own deny ranges refuse them.
TRANSITION_ADDRESSES = [
    "fec0::1",  # site-local (deprecated, still routed on some networks)
    "2002:a9fe:a9fe::1",  # 6to4 wrapping 169.254.169.254
    "2002:0a00:0001::1",  # 6to4 wrapping 10.0.0.1
    "2002:7f00:0001::1",  # 6to4 wrapping 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix: 169.254.169.254
    "64:ff9b::5db8:d822",  # NAT64 of a public address: refused too (any IPv4 could be behind)
    "64:ff9b:1::a00:1",  # NAT64 local-use prefix
    "::a9fe:a9fe",  # IPv4-compatible ::169.254.169.254
    "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
    "fd12:3456::1",  # unique local
    "fe80::1%eth0",  # link-local with a zone
    "192.0.0.8",  # IETF protocol assignments
    "192.88.99.1",  # 6to4 relay anycast
    "198.18.0.1",  # benchmarking
    "2001:db8::1",  # documentation
    "100::1",  # discard-only
]


@pytest.mark.parametrize("address", TRANSITION_ADDRESSES)
def test_transition_and_site_local_ranges_are_refused(address: str) -> None:
    with pytest.raises(urls.UrlRefusedError, match="resolves to"):
        urls.check("https://hooks.example.com/", production=True, resolver=resolving(address))
    with pytest.raises(urls.UrlRefusedError):  # loopback allowed in development: not these
        urls.check("http://hooks.example.com/", production=False, resolver=resolving(address))


def test_6to4_of_a_public_ipv4_is_allowed() -> None:
    """2002::/16 is checked by the IPv4 it embeds, not refused as a whole."""
    target = urls.check(
        "https://hooks.example.com/", production=True, resolver=resolving("2002:5db8:d822::1")
    )
    assert target.addresses == ("2002:5db8:d822::1",)


@pytest.mark.parametrize("address", ["10.1.2.3", "fec0::1", "2002:a9fe:a9fe::1", "not-an-ip"])
def test_a_refusal_never_names_the_resolved_address(address: str) -> None:
    """A tenant must not map internal DNS names by registering them and reading the error."""
    with pytest.raises(urls.UrlRefusedError) as refused:
        urls.check("https://internal.example.com/", production=True, resolver=resolving(address))
    message = str(refused.value)
    assert address not in message
    assert ipaddress_in(message) == []


def ipaddress_in(text: str) -> list[str]:
    """Anything in ``text`` that parses as an IP address (bare words, brackets, parentheses)."""
    import ipaddress
    import re

    found = []
    for word in re.split(r"[\s()\[\]'\",]+", text):
        try:
            ipaddress.ip_address(word.split("%", 1)[0])
        except ValueError:
            continue
        found.append(word)
    return found


def test_dns_resolution_at_delivery_runs_inside_the_attempts_deadline() -> None:
    """A resolver that hangs does not hold the attempt past its timeout (nor the lease)."""
    import time

    policy = _policy(timeout_s=0.5)
    claimed = _claimed("https://slow-dns.example.com/x")

    def slow(_host: str, _port: int) -> list[str]:
        time.sleep(3)
        return ["93.184.216.34"]

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    started = time.monotonic()
    outcome = delivery.post(claimed, policy, client, resolver=slow)
    took = time.monotonic() - started
    assert took < 1.5, took
    assert not outcome.ok and outcome.error is not None and "timed out" in outcome.error
    assert sent == []


def test_default_retries_span_at_least_a_day() -> None:
    """With the default settings, a delivery to a receiver that is down is retried for at least
    24 h whatever the jitter draws (the shortest waits), and the longest wait is capped."""
    from service.settings import Settings

    settings = Settings()
    shortest = sum(
        delivery.backoff(n, settings.webhook_backoff_s, settings.webhook_backoff_max_s, lambda: 0.0)
        for n in range(1, settings.webhook_max_attempts)
    )
    assert shortest >= 24 * 3600, shortest / 3600
    longest = delivery.backoff(
        1000, settings.webhook_backoff_s, settings.webhook_backoff_max_s, lambda: 1.0
    )
    assert longest == settings.webhook_backoff_max_s
