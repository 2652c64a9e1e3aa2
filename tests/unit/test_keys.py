"""Key names: a worker holding only an RQ job id finds the call's claim and cancel keys."""

from __future__ import annotations

import pytest

from shared import keys


@pytest.mark.parametrize("call_id", ["s1-call_42", "weird id/with:colons", "x" * 300])
@pytest.mark.parametrize("attempt", [0, 1, 12])
def test_claim_and_cancel_keys_follow_from_any_attempts_job_id(call_id: str, attempt: int) -> None:
    job_id = keys.job_id(call_id, attempt)
    assert keys.claim_of_job(job_id) == keys.claim(call_id)
    assert keys.cancelled_of_job(job_id) == keys.cancelled(call_id)


def test_attempts_have_distinct_job_ids_that_rq_accepts() -> None:
    ids = {keys.job_id("c-1", attempt) for attempt in range(4)}
    assert len(ids) == 4
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for i in ids)


def test_a_call_id_that_looks_like_a_rerun_is_not_confused_with_one() -> None:
    assert keys.claim_of_job(keys.job_id("a-r1")) == keys.claim("a-r1") != keys.claim("a")
    assert keys.job_id("a", 1) != keys.job_id("1-a")


@pytest.mark.parametrize("job_id", ["my-own-job", "fcx-1", "fc-", "f-c-1", "fc-bad:id"])
def test_jobs_that_are_not_calls_have_no_claim(job_id: str) -> None:
    assert keys.claim_of_job(job_id) is None and keys.cancelled_of_job(job_id) is None


GW = keys.gateway_ref("host-123-abcdef01")


@pytest.mark.parametrize("call_id", ["s1-call_42", "weird id/with:colons", "x" * 300, f"{GW}-c1"])
@pytest.mark.parametrize("attempt", [0, 1, 12])
def test_a_gateways_job_id_names_its_call_and_its_gateway(call_id: str, attempt: int) -> None:
    job_id = keys.job_id(call_id, attempt, gateway=GW)
    assert keys.claim_of_job(job_id) == keys.claim(call_id)
    assert keys.cancelled_of_job(job_id) == keys.cancelled(call_id)
    assert keys.gateway_alive_of_job(job_id) == keys.gateway_alive(GW)
    assert set(job_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def test_an_old_job_id_has_no_gateway_even_when_its_call_id_looks_like_one() -> None:
    """``fc-<12 hex>-<rest>`` is an old-format job of the call ``<12 hex>-<rest>``, not a job of gateway ``<12 hex>``:
    its claim key is the whole call id's, so a worker of either version claims the same key."""
    old = keys.job_id(f"{GW}-c1")
    assert keys.gateway_alive_of_job(old) is None
    assert keys.claim_of_job(old) == keys.claim(f"{GW}-c1") != keys.claim("c1")


def test_every_attempt_and_gateway_gives_a_distinct_job_id() -> None:
    other = keys.gateway_ref("another-gateway")
    ids = {keys.job_id("c-1", a, g) for a in range(3) for g in (None, GW, other)}
    assert len(ids) == 9 and len(GW) == len(other) == keys.GATEWAY_REF_LENGTH


@pytest.mark.parametrize("gateway", ["", "abc", "ABCDEF012345", "g" * 12, "0" * 13])
def test_a_malformed_gateway_ref_is_refused(gateway: str) -> None:
    with pytest.raises(ValueError):
        keys.job_id("c", gateway=gateway)


@pytest.mark.parametrize("job_id", ["fcg-abc-c1", "fcg-0123456789ab", "fcg-0123456789ab-bad:id", "fcgx-0123456789ab-c"])
def test_malformed_gateway_job_ids_are_not_calls(job_id: str) -> None:
    assert keys.claim_of_job(job_id) is None and keys.gateway_alive_of_job(job_id) is None
