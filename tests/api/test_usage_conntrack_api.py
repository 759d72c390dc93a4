"""Tracked connections in the usage API and on the VPS pages (issue 14)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosting.plans.models import Plan
from hosting.usage.models import UsageSample

from .helpers import fill, text

pytestmark = pytest.mark.django_db
USAGE = "/api/v1/environments/{ve_b}/usage/?range=1h"


@pytest.fixture
def sampled(world):
    """Two samples of B's VPS: 12 then 20 connections held, 5 then 9 refused."""
    Plan.objects.filter(pk=world["plan"].pk).update(connections=20)
    now = timezone.now()
    for ago, held, refused in ((30, 12, 5), (0, 20, 9)):
        UsageSample.objects.create(environment=world["ve_b"], time=now - timedelta(seconds=ago),
                                   conntrack=held, conntrack_refused=refused)
    return world


@pytest.mark.parametrize("role", ["b", "staff", "auditor"])
def test_the_usage_api_returns_the_figures(api_as, sampled, role):
    data = api_as(role).get(fill(USAGE, sampled)).json()
    assert data["conntrack"] == [12, 20] and data["conntrack_refused"] == [None, 4]
    assert data["limits"]["conntrack"] == 20
    now = data["connections"]
    assert (now["held"], now["refused"], now["limit"]) == (20, 9, 20)


def test_a_stranger_gets_404_not_the_figures(api_as, sampled):
    assert api_as("a").get(fill(USAGE, sampled)).status_code == 404


def test_no_samples_no_figures(api_as, world):
    data = api_as("b").get(fill(USAGE, world)).json()
    assert data["conntrack"] == [] and data["connections"]["held"] is None
    assert data["limits"]["conntrack"] == 16384  # the plan's default cap


@pytest.mark.parametrize("role", ["b", "staff"])
def test_the_vps_page_shows_them_next_to_the_traffic(page_as, sampled, role):
    page = text(page_as(role).get(fill("/vps/{ve_b}/", sampled)))
    assert '<p id="connections">Connections: 20 of 20 (9 refused)</p>' in page
    assert 'id="chart-connections"' in page
    live = text(page_as(role).get(fill("/vps/{ve_b}/live/", sampled)))
    assert "Connections: 20 of 20 (9 refused)" in live  # polled, so it stays current


def test_the_page_says_nothing_when_not_measured(page_as, world):
    assert 'id="connections"' not in text(page_as("b").get(fill("/vps/{ve_b}/", world)))
