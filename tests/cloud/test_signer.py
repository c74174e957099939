"""ACS3-HMAC-SHA256 through AcsV3Auth: the official vector, our extra vectors, and the SDK as oracle."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
from alibabacloud_tea_openapi.utils import Utils
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.cloud.signer import (
    EMPTY_SHA256,
    AcsV3Auth,
    Credentials,
    canonical_headers,
    canonical_query,
    canonical_request,
)


def fixed(date: str) -> datetime:
    return datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def signed(
    host: str,
    params: dict[str, str],
    *,
    action: str,
    version: str,
    creds: Credentials,
    date: str,
    nonce: str,
) -> httpx.Request:
    """Build the request the way VpcClient does and run AcsV3Auth's flow over it."""
    request = httpx.Request(
        "POST",
        f"https://{host}/?{canonical_query(params)}",
        headers={"x-acs-action": action, "x-acs-version": version},
        content=b"",
    )
    auth = AcsV3Auth(creds, clock=lambda: fixed(date), nonce=lambda: nonce)
    return next(auth.auth_flow(request))


def canonical_of(request: httpx.Request) -> str:
    headers = dict(request.headers)
    headers["host"] = request.url.netloc.decode()
    canon, names = canonical_headers(headers)
    return canonical_request(
        method="POST",
        path="/",
        query=request.url.query.decode(),
        headers=canon,
        signed_headers=names,
        payload_hash=EMPTY_SHA256,
    )


def test_official_v3_vector() -> None:
    request = signed(
        "ecs.cn-shanghai.aliyuncs.com",
        {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"},
        action="RunInstances",
        version="2014-05-26",
        creds=Credentials("YourAccessKeyId", "YourAccessKeySecret"),
        date="2023-10-26T10:22:32Z",
        nonce="3156853299f313e23d1673dc12e1703d",
    )
    assert canonical_of(request) == (
        "POST\n/\n"
        "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n"
        "host:ecs.cn-shanghai.aliyuncs.com\n"
        "x-acs-action:RunInstances\n"
        "x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-acs-date:2023-10-26T10:22:32Z\n"
        "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n"
        "x-acs-version:2014-05-26\n\n"
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert (
        hashlib.sha256(canonical_of(request).encode()).hexdigest()
        == "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )
    assert request.headers["authorization"] == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,"
        "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


DELETE_PARAMS = {
    "ClientToken": "slack-T1-1700000000.000100",
    "RegionId": "cn-shanghai",
    "VpnConnectionId": "vco-abc123",
}
COMMON = {
    "date": "2024-01-01T00:00:00Z",
    "nonce": "0123456789abcdef0123456789abcdef",
    "version": "2016-04-28",
}


def test_delete_vpn_connection_vector() -> None:
    request = signed(
        "vpc.cn-shanghai.aliyuncs.com",
        DELETE_PARAMS,
        action="DeleteVpnConnection",
        creds=Credentials("testid", "testsecret"),
        **COMMON,
    )
    assert (
        request.url.query.decode()
        == "ClientToken=slack-T1-1700000000.000100&RegionId=cn-shanghai&VpnConnectionId=vco-abc123"
    )
    assert (
        hashlib.sha256(canonical_of(request).encode()).hexdigest()
        == "2158deed2eac8228d9a26b9c3343d461a46bb28dc0821095a8705f9a5cfc9ea3"
    )
    assert request.headers["authorization"] == (
        "ACS3-HMAC-SHA256 Credential=testid,"
        "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06c2209b5f2384a7fea8949ccaa765c62158f806f84207204fc4f3a7f7212850"
    )


def test_delete_vpn_connection_sts_vector() -> None:
    request = signed(
        "vpc.cn-shanghai.aliyuncs.com",
        DELETE_PARAMS,
        action="DeleteVpnConnection",
        creds=Credentials("STS.testid", "testsecret", "CAIS-token+/="),
        **COMMON,
    )
    assert request.headers["x-acs-security-token"] == "CAIS-token+/="
    assert request.headers["authorization"] == (
        "ACS3-HMAC-SHA256 Credential=STS.testid,"
        "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version,"
        "Signature=7c4474c637e85ab8670724bf9323abf0f7245ba1e68afeebac12bdcc5459c46c"
    )


def test_encoding_edge_case_vector() -> None:
    request = signed(
        "vpc.cn-shanghai.aliyuncs.com",
        {"Name": "a b*c~d/é", "RegionId": "cn-shanghai"},
        action="DescribeVpnConnections",
        creds=Credentials("testid", "testsecret"),
        **COMMON,
    )
    # Byte-for-byte on the wire: space %20, * %2A, ~ kept, / and é encoded.
    assert request.url.query.decode() == "Name=a%20b%2Ac~d%2F%C3%A9&RegionId=cn-shanghai"
    assert request.headers["authorization"].endswith(
        "Signature=81d67df73d9505320e1ec8602fd4f6c4a7b14b64b1baf96e7a7e0c78a50635b2"
    )


def test_each_flow_signs_afresh() -> None:
    nonces = iter(["n1", "n2"])
    dates = iter([fixed("2024-01-01T00:00:00Z"), fixed("2024-01-01T00:00:05Z")])
    auth = AcsV3Auth(
        Credentials("testid", "testsecret"), clock=lambda: next(dates), nonce=lambda: next(nonces)
    )
    first = next(
        auth.auth_flow(
            httpx.Request("POST", "https://vpc.cn-shanghai.aliyuncs.com/?RegionId=cn-shanghai", content=b"")
        )
    )
    second = next(
        auth.auth_flow(
            httpx.Request("POST", "https://vpc.cn-shanghai.aliyuncs.com/?RegionId=cn-shanghai", content=b"")
        )
    )
    assert (first.headers["x-acs-signature-nonce"], second.headers["x-acs-signature-nonce"]) == ("n1", "n2")
    assert first.headers["x-acs-date"] != second.headers["x-acs-date"]
    assert first.headers["authorization"] != second.headers["authorization"]


_NAMES = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=20
)
_VALUES = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(_NAMES, _VALUES, max_size=8),
    token=st.one_of(
        st.none(),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30),
    ),
)
def test_matches_the_official_sdk(params: dict[str, str], token: str | None) -> None:
    creds = Credentials("LTAI-property", "property-secret", token)
    request = signed(
        "vpc.cn-hangzhou.aliyuncs.com", params, action="DescribeVpnConnections", creds=creds, **COMMON
    )
    # The SDK signs every header it is given: give it exactly our canonical ones (host + x-acs-*).
    headers = {k: v for k, v in request.headers.items() if k.startswith("x-acs-")}
    headers["host"] = request.url.netloc.decode()
    sdk_request = SimpleNamespace(method="POST", pathname="/", query=dict(params), headers=headers)
    expected = Utils.get_authorization(
        sdk_request, "ACS3-HMAC-SHA256", EMPTY_SHA256, creds.access_key_id, creds.access_key_secret
    )
    assert request.headers["authorization"] == expected
