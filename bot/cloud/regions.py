"""The regions the bot may take as known without asking DescribeRegions first.

A command names a region; a typo there (``cn-hangzou``) should get a friendly reply listing the
real ones rather than a connection error from a host that does not exist, so a region is checked
against DescribeRegions (cached for an hour, see :class:`bot.app.RegionCache`). Asking on the
first command after start-up put one Alibaba round trip (300 ms from outside its region) in front
of every confirmation of that first burst. A region on this list needs no such check: Alibaba
Cloud's long-standing public regions with VPC and VPN Gateway, from its "Regions and zones" page
(unverified against a live DescribeRegions; a region closed since would be refused by Alibaba
itself, with its own error). Any other region (a new one, finance and gov clouds) is still checked
against DescribeRegions before anything is asked about it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PUBLIC_REGIONS"]

PUBLIC_REGIONS: Final[frozenset[str]] = frozenset(
    {
        # Chinese mainland and Hong Kong.
        "cn-qingdao",
        "cn-beijing",
        "cn-zhangjiakou",
        "cn-huhehaote",
        "cn-wulanchabu",
        "cn-hangzhou",
        "cn-shanghai",
        "cn-shenzhen",
        "cn-heyuan",
        "cn-guangzhou",
        "cn-chengdu",
        "cn-hongkong",
        # Asia Pacific.
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-southeast-1",
        "ap-southeast-3",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        # Europe, America, Middle East.
        "eu-central-1",
        "eu-west-1",
        "us-east-1",
        "us-west-1",
        "na-south-1",
        "me-east-1",
        "me-central-1",
    }
)
