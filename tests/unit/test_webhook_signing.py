"""The `Unlearn-Signature` header against HMACs computed by hand (``openssl dgst -sha256
-hmac``), so the scheme is Stripe's and not merely self-consistent."""

from __future__ import annotations

import base64

import pytest
import standardwebhooks
import standardwebhooks.webhooks

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


def test_new_secrets_are_32_random_bytes_in_standard_base64() -> None:
    """The Standard Webhooks form, ``whsec_<base64>``, which its libraries decode."""
    secrets = {signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        raw = secret.removeprefix("whsec_")
        assert "-" not in raw and "_" not in raw
        assert len(base64.b64decode(raw, validate=True)) == 32
        assert signing.secret_key(secret) == base64.b64decode(raw)
        assert standardwebhooks.Webhook(secret)._whsecret == signing.secret_key(secret)


#: The Standard Webhooks spec's own example (its libraries' test vector).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_standard_signature_matches_the_specs_example() -> None:
    assert signing.standard_signature(SPEC_SECRET, SPEC_ID, 1614265330, SPEC_BODY) == (
        SPEC_SIGNATURE
    )


def test_the_standard_signature_covers_the_id_the_time_and_the_body() -> None:
    base = signing.standard_signature(SPEC_SECRET, SPEC_ID, 1614265330, SPEC_BODY)
    assert signing.standard_signature(SPEC_SECRET, "msg_other", 1614265330, SPEC_BODY) != base
    assert signing.standard_signature(SPEC_SECRET, SPEC_ID, 1614265331, SPEC_BODY) != base
    assert signing.standard_signature(SPEC_SECRET, SPEC_ID, 1614265330, SPEC_BODY + b" ") != base


def test_the_standard_header_has_one_signature_per_secret_space_separated() -> None:
    new, old = signing.new_secret(), signing.new_secret()
    header = signing.standard_signature_header([new, old], "evt_1", 1700000000, BODY)
    first, second = header.split(" ")
    assert first == signing.standard_signature(new, "evt_1", 1700000000, BODY)
    assert second == signing.standard_signature(old, "evt_1", 1700000000, BODY)
    with pytest.raises(ValueError, match="at least one secret"):
        signing.standard_signature_header([], "evt_1", 1, BODY)


def test_a_base64url_secret_of_before_keys_by_its_true_bytes() -> None:
    """Secrets made before the Standard Webhooks form were base64url without padding."""
    raw = bytes(range(200, 232))
    legacy = "whsec_" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert "-" in legacy or "_" in legacy
    assert signing.secret_key(legacy) == raw


def test_the_delivery_headers_verify_with_the_standardwebhooks_package() -> None:
    """Verified by the spec's maintained Python library, not by our own code."""
    import time

    secret = signing.new_secret()
    now = int(time.time())
    headers = signing.headers([secret], "evt_0", "deletion.completed", now, BODY)
    assert standardwebhooks.Webhook(secret).verify(BODY, headers) == {
        "id": "evt_0",
        "type": "deletion.completed",
    }
    for forged in (
        {**headers, "webhook-id": "evt_1"},
        {**headers, "webhook-timestamp": str(now + 1)},
    ):
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(BODY, forged)
    assert headers["Unlearn-Event-Id"] == headers["webhook-id"] == "evt_0"
    assert headers["Unlearn-Signature"] == signing.signature_header([secret], now, BODY)
