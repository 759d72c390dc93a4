"""Issue 17: the next free address of a pool is found by looking at windows of its range,
not by reading every address the pool has handed out."""

import ipaddress

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosting.ipam import services as ipam
from hosting.ipam.models import IPAddress, IPPool

pytestmark = pytest.mark.django_db


def _hold(pool, first, count):
    start = ipaddress.ip_address(first)
    IPAddress.objects.bulk_create([IPAddress(pool=pool, address=str(start + n))
                                   for n in range(count)])


def test_the_lowest_free_address_past_a_thousand_held_takes_a_few_bounded_looks():
    pool = IPPool.objects.create(name="big", network="10.0.0.0/16", gateway="10.0.0.1",
                                 first="10.0.0.1", last="10.0.255.254")
    _hold(pool, "10.0.0.2", 1022)  # .0.2 to .3.255: the gateway .0.1 is never handed out
    _hold(pool, "10.0.4.1", 1)
    with CaptureQueriesContext(connection) as looks:
        assert ipam._first_free(pool) == "10.0.4.0"
    # windows of 64, 128, 256, 512 and 1024 candidates: five looks, none reading the pool
    assert len(looks) == 5
    assert all("IN (" in look["sql"] for look in looks.captured_queries)


def test_the_first_address_of_an_empty_pool_is_its_first_but_never_its_gateway():
    six = IPPool.objects.create(name="v6", network="fd00::/64", first="fd00::10",
                                last="fd00::ffff")
    assert ipam._first_free(six) == "fd00::10"
    four = IPPool.objects.create(name="v4", network="198.18.9.0/29", gateway="198.18.9.1",
                                 first="198.18.9.1", last="198.18.9.3")
    assert ipam._first_free(four) == "198.18.9.2"


def test_a_full_pool_has_no_free_address():
    pool = IPPool.objects.create(name="tiny", network="198.18.8.0/29", first="198.18.8.1",
                                 last="198.18.8.6")
    _hold(pool, "198.18.8.1", 6)
    assert ipam._first_free(pool) is None
    assert ipam.free_count(pool) == 0 == ipam.free_count(pool, held=6)
