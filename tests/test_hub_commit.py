"""The Hub's retry policy (hub/commit.py), exactly: how long it waits and when it gives up."""

from __future__ import annotations

import pytest

from gradience_hub.errors import HubError
from gradience_hub.hub import ParentMoved, Retries, RetryPolicy, Transient


def test_the_delay_is_the_hubs_retry_after_capped_else_exponential() -> None:
    policy = RetryPolicy(backoff=0.5)
    assert [policy.delay(n, None) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(0, 7.0) == 7.0
    assert policy.delay(3, 120.0) == 30.0
    assert policy.delay(0, -1.0) == 0.0
    assert policy.delay(2, float("nan")) == 2.0


def test_transient_failures_give_up_with_exit_3_after_the_policys_tries() -> None:
    retries = Retries("org/name", RetryPolicy(backoff=1.0, max_transient_retries=2))
    assert retries.after_transient(Transient("429", retry_after=3.0, outcome_unknown=False)) == 3
    assert not retries.unanswered  # a 429 is answered without acting
    assert retries.after_transient(Transient("502")) == 2.0  # no Retry-After: 1 * 2**1
    assert retries.unanswered  # a 5xx may have landed
    with pytest.raises(HubError) as caught:
        retries.after_transient(Transient("503"))
    assert caught.value.exit_code == 3
    assert caught.value.message == "publishing to org/name failed: 503"


def test_a_moving_branch_gives_up_with_412_after_the_policys_tries() -> None:
    retries = Retries("org/name", RetryPolicy(max_parent_retries=1))
    retries.after_parent_moved(ParentMoved("moved"))
    with pytest.raises(HubError) as caught:
        retries.after_parent_moved(ParentMoved("moved again"))
    assert (caught.value.status, caught.value.exit_code) == (412, 3)
    assert caught.value.message == "org/name kept changing while publishing: moved again"
