"""A failed acknowledgement (Redis away) still frees the worker's prefetch slot
(hosting/celery.py, _acks_free_their_slot)."""

import pytest
import redis
from kombu.transport import redis as redis_transport, virtual

import hosting.celery  # noqa: F401  (installs the acknowledgement that frees its slot)


class RedisAway:
    """Just what QoS needs of a channel, with Redis gone at acknowledgement time."""

    def __init__(self):
        self.unacked_key, self.unacked_index_key = "unacked", "unacked_index"
        self.do_restore = False

    def conn_or_acquire(self, client=None):
        raise redis.exceptions.ConnectionError("Error 111 connecting: Connection refused")


def test_a_failed_ack_frees_the_prefetch_slot():
    qos = redis_transport.QoS(RedisAway(), prefetch_count=1)
    virtual.QoS.append(qos, object(), "tag-1")  # delivered (its Redis half left out)
    assert not qos.can_consume()
    with pytest.raises(redis.exceptions.ConnectionError):
        qos.ack("tag-1")  # still reported ("Couldn't ack" in the worker's log)
    assert qos.can_consume()  # but the worker fetches its next message
