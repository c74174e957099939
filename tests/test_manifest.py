"""manifest.yml against the rules of Slack's manifest schema (slackapi/manifest-schema, v1)."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from slack_sdk.web.async_base_client import AsyncBaseClient
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox.slack_api import DEFAULT_SCOPES
from bot.slack.scopes import BOT_SCOPES, COMMAND_SCOPE, METHOD_SCOPES

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifest.yml"
URL = {"type": "string", "pattern": r"^https?:\/\/", "maxLength": 3500}
SCOPE_LIST = {"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 255}

# The parts of schemas/manifest.schema.1.0.0.json our manifest uses, with its limits and its
# additionalProperties: false at every level listed.
SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["display_information"],
    "additionalProperties": False,
    "properties": {
        "display_information": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 35},
                "description": {"type": "string", "minLength": 1, "maxLength": 140},
                "background_color": {
                    "type": "string",
                    "minLength": 4,
                    "maxLength": 7,
                    "pattern": "^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$",
                },
                "long_description": {"type": "string", "minLength": 175, "maxLength": 4000},
            },
        },
        "features": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "bot_user": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["display_name"],
                    "properties": {
                        "display_name": {"type": "string", "minLength": 1, "maxLength": 80},
                        "always_online": {"type": "boolean"},
                    },
                },
                "app_home": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "home_tab_enabled": {"type": "boolean"},
                        "messages_tab_enabled": {"type": "boolean"},
                        "messages_tab_read_only_enabled": {"type": "boolean"},
                    },
                },
                "slash_commands": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 50,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["command", "description"],
                        "properties": {
                            "command": {"type": "string", "minLength": 2, "maxLength": 32, "pattern": r"^\/"},
                            "url": {"type": "string", "pattern": r"^https?:\/\/", "maxLength": 3000},
                            "description": {"type": "string", "minLength": 1, "maxLength": 2000},
                            "usage_hint": {"type": "string", "minLength": 1, "maxLength": 1000},
                            "should_escape": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "oauth_config": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "redirect_urls": {"type": "array", "items": {"type": "string", "maxLength": 2500}},
                "scopes": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"bot": SCOPE_LIST, "user": SCOPE_LIST},
                },
                "token_management_enabled": {"type": "boolean"},
                "pkce_enabled": {"type": "boolean"},
            },
        },
        "settings": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "interactivity": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["is_enabled"],
                    "properties": {
                        "is_enabled": {"type": "boolean"},
                        "request_url": URL,
                        "message_menu_options_url": URL,
                    },
                },
                "event_subscriptions": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "request_url": URL,
                        "bot_events": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 50},
                            "maxItems": 100,
                        },
                        "user_events": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 50},
                            "maxItems": 100,
                        },
                    },
                },
                "allowed_ip_address_ranges": {"type": "array", "maxItems": 50},
                "org_deploy_enabled": {"type": "boolean"},
                "socket_mode_enabled": {"type": "boolean"},
                "token_rotation_enabled": {"type": "boolean"},
                "is_hosted": {"type": "boolean"},
                "function_runtime": {"type": "string"},
            },
        },
    },
}
BOT_SOURCES = sorted(p for p in (ROOT / "bot").rglob("*.py") if "sandbox" not in p.parts)


def _web_api_methods_called() -> set[str]:
    """Slack methods the bot calls: ``x.chat_postMessage(...)`` etc. found with ``ast`` in bot/."""
    client_methods = set(dir(AsyncWebClient)) - set(dir(AsyncBaseClient))
    called: set[str] = set()
    for path in BOT_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "files_upload_v2":  # slack_sdk's helper calls two Web API methods
                    called |= {"files.getUploadURLExternal", "files.completeUploadExternal"}
                elif node.func.attr in client_methods:
                    called.add(node.func.attr.replace("_", "."))
                passes_through = (  # MeteredWebClient.api_call hands every call on to the base client
                    isinstance(node.func.value, ast.Call)
                    and isinstance(node.func.value.func, ast.Name)
                    and node.func.value.func.id == "super"
                )
                if node.func.attr == "api_call" and not passes_through:  # the generic form names the method
                    first = node.args[0] if node.args else None
                    assert isinstance(first, ast.Constant), f"{path}: api_call with a computed method"
                    called.add(str(first.value))
    return called


@pytest.fixture
def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_manifest_matches_schema(manifest: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(manifest, SCHEMA)


def test_slash_command_and_interactivity(manifest: dict[str, Any]) -> None:
    [cmd] = manifest["features"]["slash_commands"]
    assert cmd["command"] == "/vpn"
    assert (
        cmd["usage_hint"]
        == "delete <vco-id> [region] | list [region] [words] | status <id> | history [count] | help"
    )
    assert cmd["should_escape"] is False
    assert "url" not in cmd  # Socket Mode needs no URL
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]


def test_every_web_api_method_the_bot_calls_has_a_scope_row() -> None:
    called = _web_api_methods_called()
    # The scan finds what it must (a broken scan would pass everything below vacuously).
    assert {"chat.postMessage", "chat.update", "usergroups.users.list", "auth.test"} <= called
    assert called <= set(METHOD_SCOPES), f"add a row to bot/slack/scopes.py for {called - set(METHOD_SCOPES)}"
    assert set(METHOD_SCOPES) <= called, f"no code calls {set(METHOD_SCOPES) - called}; drop its row"


def test_manifest_asks_for_exactly_the_scopes_the_called_methods_need(manifest: dict[str, Any]) -> None:
    bot_scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert len(bot_scopes) == len(set(bot_scopes))
    needed = {scope for method in _web_api_methods_called() for scope in METHOD_SCOPES[method]}
    if manifest["features"]["slash_commands"]:
        needed.add(COMMAND_SCOPE)
    unused = set(bot_scopes) - needed
    missing = needed - set(bot_scopes)
    assert not unused, f"manifest.yml asks for scopes nothing uses: {sorted(unused)}"
    assert not missing, f"manifest.yml lacks scopes the code needs: {sorted(missing)}"
    assert "user" not in manifest["oauth_config"]["scopes"]
    assert set(BOT_SCOPES) == set(bot_scopes)
    # The Slack stand-in grants what the manifest asks for, so tests see the real permissions.
    assert set(DEFAULT_SCOPES) == set(bot_scopes)


def test_readme_lists_the_manifest_scopes(manifest: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Install the Slack app", 1)[1].split("\n## ", 1)[0]
    listed = set(
        re.findall(r"`([a-z]+:[a-z.]+|commands)`", section.split("It asks only for", 1)[1].split(".\n", 1)[0])
    )
    assert listed == set(manifest["oauth_config"]["scopes"]["bot"])


def test_http_mode_as_the_comments_describe_is_valid(manifest: dict[str, Any]) -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    assert "socket_mode_enabled to false" in text
    assert text.count("https://YOUR-HOST/slack/events") >= 5  # the how-to plus the commented keys
    for key in ("# request_url:", "# message_menu_options_url:", "# url:"):
        assert key in text, f"manifest.yml lacks the commented HTTP-mode key {key}"
    http = copy.deepcopy(manifest)
    url = "https://vpn-bot.example.com/slack/events"
    http["settings"]["socket_mode_enabled"] = False
    http["features"]["slash_commands"][0]["url"] = url
    http["settings"]["interactivity"]["request_url"] = url
    http["settings"]["interactivity"]["message_menu_options_url"] = url
    http["settings"]["event_subscriptions"]["request_url"] = url
    jsonschema.validate(http, SCHEMA)


def test_home_tab_and_its_event(manifest: dict[str, Any]) -> None:
    """The Home tab is on and app_home_opened is subscribed (the bot publishes the tab on it)."""
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("display_information", "long_description"), "too short"),
        (("display_information", "name"), "x" * 36),
        (("display_information", "background_color"), "blue"),
        (("display_information", "colour"), "#fff"),
        (("features", "slash_commands", 0, "command"), "vpn"),
        (("features", "slash_commands", 0, "url"), "ftp://host/slack/events"),
        (("features", "slash_commands", 0, "escape"), True),
        (("settings", "interactivity", "is_enabled"), "yes"),
        (("settings", "socket_mode"), True),
        (("features", "app_home", "home_tab"), True),
        (("settings", "event_subscriptions", "bot_events"), "app_home_opened"),
        (("oauth_config", "scopes", "bot", 0), "x" * 51),
    ],
)
def test_schema_rejects_broken_variants(
    manifest: dict[str, Any], path: tuple[Any, ...], value: object
) -> None:
    broken = copy.deepcopy(manifest)
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
