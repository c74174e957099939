"""The region check in front of a command: no DescribeRegions round trip for a public region."""

from __future__ import annotations

import pytest
from slackfakes import FakeWorkflow, make_settings

from bot.cloud.regions import PUBLIC_REGIONS
from bot.errors import UsageError
from bot.ids import is_region
from bot.slack.deps import SlackDeps
from bot.slack.replies import check_region


class CountingRegions:
    """DescribeRegions as the Slack layer sees it (the cached list), counting how often it is asked."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.asked = 0

    async def __call__(self) -> frozenset[str]:
        self.asked += 1
        return frozenset(self.known)


def _deps(regions: CountingRegions) -> SlackDeps:
    return SlackDeps(workflow=FakeWorkflow(), settings=make_settings(), regions=regions)


async def test_a_public_region_is_taken_without_asking_describe_regions() -> None:
    regions = CountingRegions({"cn-hangzhou"})
    for region in ("cn-hangzhou", "ap-southeast-1", "eu-central-1"):
        await check_region(_deps(regions), region)
    # The first command after start-up used to wait for DescribeRegions (one round trip) here.
    assert regions.asked == 0


async def test_any_other_region_is_checked_against_describe_regions() -> None:
    regions = CountingRegions({"cn-hangzhou", "cn-shanghai-finance-1"})
    await check_region(_deps(regions), "cn-shanghai-finance-1")
    assert regions.asked == 1
    with pytest.raises(UsageError, match="no VPC region `cn-hangzou`"):
        await check_region(_deps(regions), "cn-hangzou")
    assert regions.asked == 2


def test_the_public_regions_are_well_formed_region_ids() -> None:
    assert PUBLIC_REGIONS
    assert all(is_region(r) for r in PUBLIC_REGIONS)
