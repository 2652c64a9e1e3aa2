"""Conversation ids: parsing the query parameter and ownership in Redis (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest

from gateway import conversation_ids as ids
from shared import keys


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


async def test_a_conversation_with_memory_but_no_owner_is_nobodys() -> None:
    client = fakeredis.FakeAsyncRedis()
    await client.rpush(keys.conversation_memory("c3"), "{}")  # the owner key expired or was never set
    assert await ids.claim(client, "c3", "mallory", 60) == ids.ORPHANED
    assert await ids.claim(client, "c3", "alice", 60) == ids.ORPHANED
    assert await ids.owner(client, "c3") is None
    assert await ids.claim(client, "c4", "alice", 60) == ids.OWNED
    assert await ids.claim(client, "c4", "mallory", 60) == ids.TAKEN
    assert 0 < await client.ttl(keys.conversation_owner("c4")) <= 60
