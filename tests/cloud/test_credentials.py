"""Credential providers: the env pair, and the Alibaba chain refreshing STS creds from a loopback URI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cloud.client import VpcClient
from bot.cloud.credentials import (
    ChainCredentialsProvider,
    CredentialsProvider,
    StaticCredentialsProvider,
    build_credentials_provider,
)
from bot.cloud.signer import Credentials
from bot.config import Settings
from bot.errors import CloudError, ConfigError

from .fakes import FakeVpc, json_reply, verify_signature

_ENV = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN")


def settings(**env: Any) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_ENV, "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# --- the env pair -------------------------------------------------------------------------------------------


async def test_static_pair_from_settings() -> None:
    provider = build_credentials_provider(
        settings(
            ALIBABA_CLOUD_ACCESS_KEY_ID="LTAI-id",
            ALIBABA_CLOUD_ACCESS_KEY_SECRET="secret-value-1",
            ALIBABA_CLOUD_SECURITY_TOKEN="token-value-1",
        )
    )
    assert isinstance(provider, StaticCredentialsProvider)
    assert await provider.get() == Credentials("LTAI-id", "secret-value-1", "token-value-1")
    assert "secret-value-1" not in repr(provider)
    assert "token-value-1" not in repr(provider)


def test_half_a_pair_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        build_credentials_provider(settings(ALIBABA_CLOUD_ACCESS_KEY_ID="LTAI-id"))
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in caught.value.friendly


def test_no_pair_means_the_chain() -> None:
    provider = build_credentials_provider(settings())
    assert isinstance(provider, ChainCredentialsProvider)


# --- a loopback credentials URI ----------------------------------------------------------------------------


class CredentialsServer:
    """Serves short-lived STS credentials (expiring in 10 min, so the library refreshes every time)."""

    def __init__(self) -> None:
        self.hits = 0
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                expiration = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
                body = {
                    "Code": "Success" if server.status == 200 else "Failure",
                    "AccessKeyId": f"STS.key-{server.hits}",
                    "AccessKeySecret": f"sts-secret-{server.hits}",
                    "SecurityToken": f"sts-token-{server.hits}",
                    "Expiration": expiration,
                }
                data = json.dumps(body).encode()
                self.send_response(server.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/credentials"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> CredentialsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def creds_server() -> Iterator[CredentialsServer]:
    with CredentialsServer() as server:
        yield server


def uri_config(url: str) -> object:
    from alibabacloud_credentials.models import Config

    return Config(type="credentials_uri", credentials_uri=url)


async def test_chain_refreshes_short_lived_sts_credentials(creds_server: CredentialsServer) -> None:
    provider = ChainCredentialsProvider(uri_config(creds_server.url))
    first = await provider.get()
    second = await provider.get()
    assert first == Credentials("STS.key-1", "sts-secret-1", "sts-token-1")
    assert second == Credentials("STS.key-2", "sts-secret-2", "sts-token-2")
    assert creds_server.hits == 2
    assert "sts-secret" not in repr(provider)


async def test_client_signs_each_call_with_the_refreshed_key(creds_server: CredentialsServer) -> None:
    fake = FakeVpc(replies=[json_reply({"RequestId": "R", "VpnGatewayId": "vpn-1", "Status": "active"})])
    provider: CredentialsProvider = ChainCredentialsProvider(uri_config(creds_server.url))
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
        client = VpcClient(provider, http=http)
        await client.describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
        await client.describe_vpn_gateway_detail(region="cn-shanghai", gateway_id="vpn-1")
    first, second = fake.requests
    assert "Credential=STS.key-1," in first.headers["authorization"]
    assert first.headers["x-acs-security-token"] == "sts-token-1"
    assert verify_signature(first, "sts-secret-1")
    assert "Credential=STS.key-2," in second.headers["authorization"]
    assert second.headers["x-acs-security-token"] == "sts-token-2"
    assert verify_signature(second, "sts-secret-2")


async def test_concurrent_gets_do_not_block_the_loop(creds_server: CredentialsServer) -> None:
    provider = ChainCredentialsProvider(uri_config(creds_server.url))
    results = await asyncio.wait_for(asyncio.gather(*(provider.get() for _ in range(5))), timeout=4)
    assert len({c.access_key_id for c in results}) == 5


async def test_chain_failure_is_a_cloud_error_without_the_server_body(
    creds_server: CredentialsServer,
) -> None:
    creds_server.status = 500
    provider = ChainCredentialsProvider(uri_config(creds_server.url))
    with pytest.raises(CloudError) as caught:
        await provider.get()
    assert caught.value.code == "Credentials.Unavailable"
    assert "sts-secret" not in caught.value.friendly
    assert "sts-secret" not in str(caught.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in caught.value.friendly


_CHILD = textwrap.dedent(
    """
    import asyncio, threading
    from bot.cloud.credentials import build_credentials_provider, ChainCredentialsProvider
    from bot.config import load_settings

    async def main():
        provider = build_credentials_provider(load_settings(_env_file=None))
        assert isinstance(provider, ChainCredentialsProvider), provider
        first = await provider.get()
        second = await provider.get()
        threads = sorted(t.name for t in threading.enumerate())
        print(first.access_key_id, second.access_key_id, second.security_token, "APScheduler" in " ".join(threads))

    asyncio.run(main())
    """
)


@pytest.mark.process
async def test_default_chain_reads_the_credentials_uri_from_env(
    creds_server: CredentialsServer, tmp_path: Path
) -> None:
    # The library reads its env at import: run it in a fresh interpreter with a controlled env.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_") and "proxy" not in k.lower()
    }
    env.update(
        HOME=str(tmp_path),  # no ~/.aliyun/config.json, no ~/.alibabacloud/credentials.ini
        ALIBABA_CLOUD_CREDENTIALS_URI=creds_server.url,
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        ALIBABA_CLOUD_CLI_PROFILE_DISABLED="true",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["STS.key-1", "STS.key-2", "sts-token-2", "False"]
