"""The official SDK (alibabacloud-vpc20160428) as the oracle of the VPC wire format.

Nothing here is our code's idea of the API: the request parameters come from the SDK's own
``<Action>Request`` models and ``Client.<action>_with_options`` (its query/body split and its
``Utils.query`` flattening, ``Tags.1.Key``), captured by overriding the SDK client's public
``call_api`` so that nothing goes on the network; the answers are parsed by the same method into
the SDK's ``<Action>Response``. The keys of the JSON-text parameters (``BgpConfig``, ``IkeConfig``
...), which the SDK types only as ``str``, come from the documentation the SDK carries for each
field (its ``- **BgpConfig.EnableBgp**: ...`` lists).
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcSdkClient
from darabonba.model import DaraModel
from darabonba.runtime import RuntimeOptions

__all__ = [
    "SdkCall",
    "SdkSchema",
    "WireCheck",
    "capture_sdk_call",
    "leaf_types",
    "model_fields",
    "sdk_request_from_wire",
    "sdk_schema",
    "sdk_wire_value",
    "snake",
    "type_problems",
]


def snake(action: str) -> str:
    """``CreateVpnConnection`` -> ``create_vpn_connection`` (the SDK's method names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()


class _CapturingClient(VpcSdkClient):  # type: ignore[misc]  # the SDK is untyped (Any)
    """The official client with ``call_api`` (public) answering ``answer`` instead of calling out."""

    def __init__(self, answer: Mapping[str, Any] | None = None) -> None:
        config = open_api_models.Config(
            access_key_id="oracle", access_key_secret="oracle", region_id="cn-shanghai"
        )
        super().__init__(config)
        self.answer = dict(answer or {})
        self.sent: list[tuple[Any, Any]] = []

    def call_api(self, params: Any, request: Any, runtime: Any) -> dict[str, Any]:
        self.sent.append((params, request))
        return {"body": self.answer, "headers": {}, "statusCode": 200}


@dataclass(frozen=True)
class SdkCall:
    """What the SDK would send for one request, and what it made of the answer."""

    query: dict[str, str]
    body: dict[str, str]
    style: str
    method: str
    response: Any

    @property
    def params(self) -> dict[str, str]:
        return {**self.query, **self.body}


def capture_sdk_call(action: str, request: DaraModel, answer: Mapping[str, Any] | None = None) -> SdkCall:
    """Run the SDK's ``<action>_with_options`` on ``request``; ``answer`` is the body it receives."""
    client = _CapturingClient(answer)
    response = getattr(client, f"{snake(action)}_with_options")(request, RuntimeOptions())
    (params, sent) = client.sent[-1]
    assert params.action == action
    return SdkCall(
        query=dict(sent.query or {}),
        body=dict(sent.body or {}),
        style=params.style,
        method=params.method,
        response=response,
    )


def _hints(cls: type[DaraModel]) -> dict[str, Any]:
    module = inspect.getmodule(cls)
    # Each SDK model module imports its package's models as ``main_models``.
    namespace = {"main_models": vpc_models, **(vars(module) if module else {})}
    hints = typing.get_type_hints(cls.__init__, globalns=namespace)
    hints.pop("return", None)
    return hints


def _list_item(hint: Any) -> Any | None:
    if typing.get_origin(hint) in (list, typing.List):  # noqa: UP006 - the SDK's own spelling
        return typing.get_args(hint)[0]
    return None


def _is_model(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, DaraModel)


@dataclass(frozen=True)
class Field:
    """One field of an SDK model: its attribute, its wire name and its type."""

    attr: str
    wire: str
    hint: Any


def model_fields(cls: type) -> dict[str, Field]:
    """The fields of an SDK model by wire name (as its ``to_map`` spells them)."""
    out: dict[str, Field] = {}
    for attr, hint in _hints(cls).items():
        probe = cls()
        setattr(probe, attr, _sample(hint))
        # Some models always write an empty list (``Tag: []``): the new key is the field's.
        base, got = cls().to_map(), probe.to_map()
        (wire,) = (k for k, v in got.items() if k not in base or base[k] != v)
        out[wire] = Field(attr, wire, hint)
    return out


def _sample(hint: Any) -> Any:
    item = _list_item(hint)
    if item is not None:
        return [_sample(item)]
    if _is_model(hint):
        return _populate(hint)
    if hint is bool:
        return True
    if hint is int:
        return 7
    if hint is float:
        return 0.5
    if typing.get_origin(hint) in (dict, typing.Dict):  # noqa: UP006
        return {"k": "v"}
    return "s"


def _populate(cls: type) -> DaraModel:
    """An instance of ``cls`` with every field set (lists of one element)."""
    return cls(**{attr: _sample(hint) for attr, hint in _hints(cls).items()})


def _field_doc(cls: type[DaraModel], attr: str) -> str:
    """The comment block the SDK writes above ``self.<attr> = <attr>`` in ``cls.__init__``."""
    lines = inspect.getsource(cls.__init__).splitlines()
    end = next(i for i, line in enumerate(lines) if line.strip() == f"self.{attr} = {attr}")
    start = end
    while start > 0 and lines[start - 1].strip().startswith("#"):
        start -= 1
    return "\n".join(lines[start:end])


def json_keys(cls: type, attr: str, wire: str) -> frozenset[str] | None:
    """The keys the SDK documents for a JSON-text parameter, or None if ``wire`` is plain text.

    A JSON-text parameter's documentation lists its keys as ``- **Wire.Key**: ...`` (sometimes a
    key without the prefix, ``- **LocalBgpIp**: ...``); a plain one has no ``Wire.`` item.
    """
    doc = _field_doc(cls, attr)
    if f"**{wire}." not in doc:
        return None
    found = re.findall(rf"^\s*# - \*\*(?:{re.escape(wire)}\.)?([A-Za-z]\w*)\*\*", doc, re.MULTILINE)
    return frozenset(k for k in found if k not in ("true", "false"))


@dataclass(frozen=True)
class SdkSchema:
    """Every parameter name of an action as the SDK would send it (list indices as ``N``)."""

    action: str
    query: frozenset[str]
    body: frozenset[str]
    json: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def names(self) -> frozenset[str]:
        return self.query | self.body


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".N", name)


def sdk_schema(action: str) -> SdkSchema:
    """The SDK's parameters of ``action``: a fully populated request through the SDK's own method."""
    cls = getattr(vpc_models, f"{action}Request")
    call = capture_sdk_call(action, _populate(cls))
    doc_keys: dict[str, frozenset[str]] = {}
    for wire, fld in model_fields(cls).items():
        if fld.hint is str:
            keys = json_keys(cls, fld.attr, wire)
            if keys is not None:
                doc_keys[wire] = keys
    return SdkSchema(
        action=action,
        query=frozenset(_pattern(n) for n in call.query),
        body=frozenset(_pattern(n) for n in call.body),
        json=doc_keys,
    )


def iter_model_leaves(cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(flattened name with N indices, hint)`` for every leaf of an SDK request model."""
    for wire, fld in model_fields(cls).items():
        name = f"{prefix}{wire}"
        item = _list_item(fld.hint)
        if item is not None:
            if _is_model(item):
                yield from iter_model_leaves(item, f"{name}.N.")
            else:
                yield f"{name}.N", item
        elif _is_model(fld.hint):
            yield from iter_model_leaves(fld.hint, f"{name}.")
        else:
            yield name, fld.hint


def leaf_types(action: str) -> dict[str, Any]:
    """The SDK's type of every (flattened) parameter of ``action``."""
    return dict(iter_model_leaves(getattr(vpc_models, f"{action}Request")))


def _typed(name: str, value: str, hint: Any, doc_keys: frozenset[str] | None) -> tuple[Any, str | None]:
    """The SDK-typed value of one wire parameter, or the problem with its encoding."""
    if hint is bool:
        if value not in ("true", "false"):
            return None, f"{name}={value!r}: a boolean is sent as true or false"
        return value == "true", None
    if hint is int:
        if not re.fullmatch(r"-?[0-9]+", value):
            return None, f"{name}={value!r}: not an integer"
        return int(value), None
    if doc_keys is not None:
        try:
            decoded = json.loads(value)
        except ValueError:
            return None, f"{name}: the SDK documents a JSON object, got text that is not JSON"
        if not isinstance(decoded, dict):
            return None, f"{name}: the SDK documents a JSON object"
        unknown = sorted(set(decoded) - doc_keys)
        if unknown:
            return None, f"{name}: keys the SDK does not document: {', '.join(unknown)}"
    return value, None


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"Tags.1.Key": v}`` -> ``{"Tags": [{"Key": v}]}`` (the inverse of the SDK's flattening)."""
    root: dict[str | int, Any] = {}  # int keys are list positions until lists() below
    for name, value in flat.items():
        node = root
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(int(part) if part.isdigit() else part, {})
        last = parts[-1]
        node[int(last) if last.isdigit() else last] = value

    def lists(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if node and all(isinstance(k, int) for k in node):
            return [lists(node[k]) for k in sorted(node)]
        return {k: lists(v) for k, v in node.items()}

    nested = lists(root)
    assert isinstance(nested, dict)
    return nested


@dataclass
class WireCheck:
    """The bot's request read through the SDK: the SDK's request and what is wrong with the bot's."""

    request: DaraModel | None
    problems: list[str]


def sdk_request_from_wire(action: str, params: Mapping[str, str]) -> WireCheck:
    """The SDK's ``<action>Request`` holding what the bot sent; every name must be the SDK's."""
    cls = getattr(vpc_models, f"{action}Request", None)
    if cls is None:
        return WireCheck(None, [f"{action}: the SDK has no {action}Request"])
    leaves = leaf_types(action)
    docs = sdk_schema(action).json
    typed: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in params.items():
        pattern = _pattern(name)
        if pattern not in leaves:
            problems.append(f"{name}: not a parameter of the SDK's {action}Request")
            continue
        converted, problem = _typed(name, value, leaves[pattern], docs.get(pattern))
        if problem:
            problems.append(problem)
        else:
            typed[name] = converted
    return WireCheck(cls().from_map(_nest(typed)), problems)


def sdk_wire_value(value: str, hint: Any) -> str:
    """The SDK's text for a value: its Python SDK writes ``str(True)``, i.e. ``True``.

    Alibaba's documentation writes ``true``/``false``, as the bot does; the oracle compares
    booleans without case and checks separately (``_typed``) that the bot writes one of those.
    """
    return value.lower() if hint is bool else value


def type_problems(cls: type, value: Mapping[str, Any], path: str = "") -> list[str]:
    """Where an answer's values are not of the types the SDK's response model declares.

    The SDK's ``from_map`` copies values without converting them, so a number sent as text would
    pass through it unnoticed: this walks the answer against the model's declared types instead.
    """
    fields = model_fields(cls)
    problems: list[str] = []
    for name, item in value.items():
        fld = fields.get(name)
        if fld is None:
            problems.append(f"{path}{name}: not in the SDK's {cls.__name__}")
            continue
        element = _list_item(fld.hint)
        values = item if element is not None else [item]
        hint = element if element is not None else fld.hint
        if element is not None and not isinstance(item, list):
            problems.append(f"{path}{name}: a list for the SDK, got {type(item).__name__}")
            continue
        for one in values:
            if _is_model(hint):
                if isinstance(one, Mapping):
                    problems += type_problems(hint, one, f"{path}{name}.")
                else:
                    problems.append(f"{path}{name}: an object for the SDK, got {type(one).__name__}")
            elif one is not None and not _is_instance(one, hint):
                problems.append(f"{path}{name}={one!r}: {getattr(hint, '__name__', hint)} for the SDK")
    return problems


def _is_instance(value: Any, hint: Any) -> bool:
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a Dict[str, Any] or the like: any JSON value
