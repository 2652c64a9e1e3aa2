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
