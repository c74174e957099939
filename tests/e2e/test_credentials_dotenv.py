"""``.env`` values reach the Alibaba Cloud credential library, which reads only ``os.environ``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.config import load_settings

from .support import child_env, run_to_exit

# In a child process: the library reads its environment once, when first imported.
SCRIPT = """
import asyncio
from bot.cloud.credentials import build_credentials_provider
from bot.config import load_settings

credentials = asyncio.run(build_credentials_provider(load_settings()).get())
print(credentials.access_key_id, credentials.security_token)
"""


@pytest.fixture
async def credentials_uri() -> AsyncIterator[str]:
    """A local ALIBABA_CLOUD_CREDENTIALS_URI server handing out STS credentials."""

    async def creds(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "Code": "Success",
                "AccessKeyId": "STS.FromTheDotEnvUri",
                "AccessKeySecret": "uri-secret",
                "SecurityToken": "uri-token",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        )

    app = web.Application()
    app.router.add_get("/creds", creds)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/creds"
    finally:
        await runner.cleanup()


@pytest.mark.process
async def test_dotenv_chain_settings_reach_the_library_quietly(tmp_path: Path, credentials_uri: str) -> None:
    """The chain's URI and ECS switch set only in ``.env``: the credentials come from that URI,
    and with the metadata probe off the library prints nothing to stderr."""
    (tmp_path / ".env").write_text(
        f"ALIBABA_CLOUD_CREDENTIALS_URI={credentials_uri}\nALIBABA_CLOUD_ECS_METADATA_DISABLED=true\n"
    )
    status, out, err = await run_to_exit(
        [sys.executable, "-c", SCRIPT], env=child_env(tmp_path), cwd=tmp_path, within=60
    )
    assert status == 0, err
    assert out.split() == ["STS.FromTheDotEnvUri", "uri-token"]
    assert err == ""


def test_settings_keep_the_undeclared_alibaba_lines_of_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true\nALIBABA_CLOUD_PROFILE=ops\nUNRELATED=1\n"
        "ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI0123456789\nALIBABA_CLOUD_ACCESS_KEY_SECRET=s3cret-0123456789\n"
    )
    settings = load_settings()
    # The declared pair stays a SecretStr setting; only the chain's other switches are passed on.
    assert settings.credential_chain_env == {
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
        "ALIBABA_CLOUD_PROFILE": "ops",
    }
    assert "s3cret" not in repr(settings)
