"""Conversation ids: parsing the query parameter and ownership in Redis (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest

from gateway import conversation_ids as ids


def test_requested_id_from_the_query() -> None:
    assert ids.requested_id("/v1/agent/converse?conversation=abc_D-1") == "abc_D-1"
    assert ids.requested_id("/v1/agent/converse?token=x&conversation=" + "a" * 128) == "a" * 128
    assert ids.requested_id("/v1/agent/converse") is None
    assert ids.requested_id("/v1/agent/converse?token=x") is None


@pytest.mark.parametrize(
    "query",
    ["conversation=", "conversation=a%2Fb", "conversation=" + "a" * 129, "conversation=a&conversation=b",
     "conversation=caf%C3%A9", "conversation=a.b"],
)  # fmt: skip
def test_malformed_ids_are_refused(query: str) -> None:
    with pytest.raises(ids.BadConversationId):
        ids.requested_id("/v1/agent/converse?" + query)


def test_new_ids_are_valid_and_distinct() -> None:
    made = {ids.new_id() for _ in range(100)}
    assert len(made) == 100
    assert all(ids.ID_PATTERN.match(i) for i in made)


async def test_first_caller_owns_a_conversation() -> None:
    client = fakeredis.FakeAsyncRedis()
    assert await ids.owner(client, "c1") is None
    assert await ids.claim(client, "c1", "alice", 60)
    assert await ids.claim(client, "c1", "alice", 60)  # the owner comes back
    assert not await ids.claim(client, "c1", "mallory", 60)
    assert await ids.owner(client, "c1") == "alice"
    assert await ids.claim(client, "c2", "", 60)  # no credentials: the empty caller owns what it starts
    assert not await ids.claim(client, "c2", "alice", 60)
