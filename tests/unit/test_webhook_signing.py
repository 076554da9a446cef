"""The `Unlearn-Signature` header against HMACs computed by hand (``openssl dgst -sha256
-hmac``), so the scheme is Stripe's and not merely self-consistent."""

from __future__ import annotations

import base64

import pytest

from service.webhooks import signing

BODY = b'{"id":"evt_0","type":"deletion.completed"}'
#: printf '1700000000.<BODY>' | openssl dgst -sha256 -hmac 'whsec_test-secret'
BY_HAND = "9e1846ac2d73fe53484dd6531f34d7832d35642406ab6815e54dfc6beea05f62"
#: the same under 'whsec_old'
BY_HAND_OLD = "909ee5bc5c7aff0a2c73dc8d53e990e8e91c5c1c1d9bb6d14ce416ed006d0111"


def test_the_signature_is_the_hmac_of_the_timestamp_a_dot_and_the_body() -> None:
    assert signing.signature("whsec_test-secret", 1700000000, BODY) == BY_HAND


def test_the_header_has_the_time_and_one_v1_per_secret_current_first() -> None:
    header = signing.signature_header(["whsec_test-secret", "whsec_old"], 1700000000, BODY)
    assert header == f"t=1700000000,v1={BY_HAND},v1={BY_HAND_OLD}"
    assert signing.signature_header(["whsec_test-secret"], 1700000000, BODY) == (
        f"t=1700000000,v1={BY_HAND}"
    )


def test_a_changed_body_or_time_changes_the_signature() -> None:
    assert signing.signature("whsec_test-secret", 1700000001, BODY) != BY_HAND
    assert signing.signature("whsec_test-secret", 1700000000, BODY + b" ") != BY_HAND


def test_no_secret_no_header() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        signing.signature_header([], 1, BODY)


def test_new_secrets_are_32_random_bytes_in_base64url() -> None:
    secrets = {signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        raw = secret.removeprefix("whsec_")
        assert "=" not in raw and "+" not in raw and "/" not in raw
        assert len(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) == 32
