"""The Alibaba Cloud VPC OpenAPI client (version 2016-04-28) over httpx: the wire, one method per action.

This is the only module that touches httpx. Every call is ``POST https://{host}/?{canonical
query}`` with an empty body (a form body for the parameters the SDK puts there, ``_FORM_BODY``),
``x-acs-action``/``x-acs-version`` headers and an ACS3-HMAC-SHA256 signature
(:class:`bot.cloud.signer.AcsV3Auth`), exactly as the official SDK sends it.

Errors are translated once, in :func:`translate_response` and :meth:`VpcClient._send`:

- a JSON body with ``Code`` (whatever the HTTP status, 2xx included) -> :class:`CloudApiError`
  carrying :func:`bot.cloud.codes.lookup` of the code;
- a body that is not a JSON object, a timeout or a connection failure -> :class:`CloudTransportError`
  with the pseudo-codes ``Transport.*``.

This is the one layer that retries transient failures (stamina, with a backoff hook): each
attempt is signed afresh with new credentials, nonce and date, within ``api_deadline_seconds``;
``x-acs-retry-after`` (milliseconds) wins over the exponential backoff. BUSY and NEVER errors are
raised at once, and so is any definite rejection of a call that carries a ClientToken.

Reads that only inform a person may join an identical read already on the way (``shared``).
The domain's view of these answers (impact, snapshot) is :mod:`bot.cloud.adapter`'s.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx
import stamina
from pydantic import BaseModel, ValidationError

from bot.cloud.codes import (
    TRANSPORT_BAD_RESPONSE,
    TRANSPORT_CONNECT_ERROR,
    TRANSPORT_TIMEOUT,
    is_throttling,
    lookup,
)
from bot.cloud.credentials import CredentialsProvider, build_credentials_provider
from bot.cloud.endpoints import EndpointResolver, Network
from bot.cloud.models import (
    CreateVpnConnectionResponse,
    CreateVpnPbrRouteEntryResponse,
    CreateVpnRouteEntryResponse,
    CustomerGatewayDetail,
    DeleteResponse,
    DescribeRegionsResponse,
    DescribeVpnConnectionsPage,
    Page,
    Region,
    VpnConnectionDetail,
    VpnGatewayDetail,
    VpnPbrRouteEntriesPage,
    VpnPbrRouteEntry,
    VpnRouteEntriesPage,
    VpnRouteEntry,
)
from bot.cloud.ratelimit import AdaptiveRateLimiter
from bot.cloud.shared import ReadKey, SharedReads
from bot.cloud.signer import AcsV3Auth, canonical_query
from bot.cloud.specs import VpnConnectionSpec, route_entry_params
from bot.cloud.transport import VpcTransport
from bot.cloud.wire import SECRET_KEYS, parse_retry_after, redact, translate_response, validate_client_token
from bot.errors import CloudApiError, CloudError, CloudTransportError, RetryClass

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = [
    "API_VERSION",
    "PAGE_SIZE",
    "SECRET_KEYS",
    "VpcClient",
    "parse_retry_after",
    "redact",
    "translate_response",
    "validate_client_token",
]

log = logging.getLogger("bot.cloud")

API_VERSION: Final = "2016-04-28"
PAGE_SIZE: Final = 50
# Requests per second when no limiter is given (the setting's default).
_DEFAULT_RATE: Final = 100.0
# Never follow pagination forever if the server keeps claiming more.
_MAX_PAGES: Final = 200

_ModelT = TypeVar("_ModelT", bound=BaseModel)
_ItemT = TypeVar("_ItemT")
# Parameters the official SDK sends in a form body (its ``body_flat``), by name prefix; the rest
# go in the query (tests/cloud/test_oracle.py checks both against the SDK).
_FORM_BODY: Final[Mapping[str, tuple[str, ...]]] = {
    "CreateVpnConnection": ("TunnelOptionsSpecification.",),
}


def _default_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(15.0, connect=5.0),
        transport=VpcTransport(),
        headers={"user-agent": "vpn-bot (httpx)"},
    )


def _transport_error(
    exc: httpx.TransportError | TimeoutError, *, action: str, region: str, host: str, resource_id: str | None
) -> CloudTransportError:
    """No usable answer: a timeout, a broken answer or no connection, as a ``Transport.*`` error."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        log.warning("vpc call timed out", extra={"action": action, "region": region})
        message, code = f"{action}: no answer from {host} in time", TRANSPORT_TIMEOUT
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        log.warning("vpc call got a broken answer", extra={"action": action, "region": region})
        message, code = f"{action}: broken HTTP answer from {host}", TRANSPORT_BAD_RESPONSE
    else:
        log.warning(
            "vpc call could not connect",
            extra={"action": action, "region": region, "error": type(exc).__name__},
        )
        message, code = f"{action}: could not reach {host} ({type(exc).__name__})", TRANSPORT_CONNECT_ERROR
    return CloudTransportError(message, info=lookup(code), action=action, resource_id=resource_id)


class VpcClient:
    """Call the VPC API: one method per action, returning its parsed answer.

    :class:`bot.cloud.adapter.VpcAdapter` turns these into :class:`bot.ports.VpcApi`.
    """

    def __init__(
        self,
        credentials: CredentialsProvider,
        *,
        http: httpx.AsyncClient | None = None,
        endpoint: str | None = None,
        endpoints: Mapping[str, str] | None = None,
        network: Network = "public",
        default_region: str = "cn-hangzhou",
        api_deadline_seconds: float = 60.0,
        max_attempts: int = 5,
        wait_initial: float = 0.5,
        wait_max: float = 10.0,
        wait_jitter: float = 0.5,
        clock: Callable[[], datetime] | None = None,
        nonce: Callable[[], str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        limiter: AdaptiveRateLimiter | None = None,
    ) -> None:
        self._credentials = credentials
        self._owns_http = http is None
        self._http = http if http is not None else _default_http_client()
        self._endpoints = EndpointResolver(
            override=endpoint, per_region=dict(endpoints or {}), network=network
        )
        self._default_region = default_region
        self._deadline = api_deadline_seconds
        self._max_attempts = max(1, max_attempts)
        self._wait_initial = wait_initial
        self._wait_max = wait_max
        self._wait_jitter = wait_jitter
        self._auth_kw: dict[str, Any] = {}
        if clock is not None:
            self._auth_kw["clock"] = clock
        if nonce is not None:
            self._auth_kw["nonce"] = nonce
        self._monotonic = monotonic
        # Concurrency is paced by rate (Alibaba throttles per account and API), not by pool size.
        self._limiter = limiter or AdaptiveRateLimiter(_DEFAULT_RATE)
        # Reads that other callers may join while they are on the way (see _shared_get).
        self._shared = SharedReads()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credentials: CredentialsProvider | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> VpcClient:
        """Build the client the bot runs with."""
        return cls(
            credentials if credentials is not None else build_credentials_provider(settings),
            http=http,
            endpoint=settings.vpc_endpoint,
            endpoints=settings.vpc_endpoints,
            network=settings.alibaba_network,
            default_region=settings.default_region,
            api_deadline_seconds=settings.api_deadline_seconds,
            limiter=AdaptiveRateLimiter(settings.api_rate_per_second),
        )

    @property
    def _credentials_provider(self) -> CredentialsProvider:
        return self._credentials

    def with_credentials(
        self, credentials: CredentialsProvider, *, limiter: AdaptiveRateLimiter | None = None
    ) -> VpcClient:
        """The same client (HTTP pool, endpoints, retries) signing with ``credentials``.

        ``limiter`` paces it separately (Alibaba throttles per account); the copy never closes the pool.
        """
        twin = copy.copy(self)
        twin._credentials = credentials
        twin._owns_http = False
        # What one account (and role session) read is never another's answer.
        twin._shared = SharedReads()
        if limiter is not None:
            twin._limiter = limiter
        return twin

    async def aclose(self) -> None:
        """Close the HTTP client if this instance built it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> VpcClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"VpcClient(credentials={self._credentials!r}, endpoint={self._endpoints.override!r})"

    # --- transport ---------------------------------------------------------------------------------

    async def _send(
        self, action: str, region: str, params: Mapping[str, str], *, resource_id: str | None, budget: float
    ) -> dict[str, Any]:
        """One signed attempt; fresh credentials, nonce and date each time."""
        in_body = _FORM_BODY.get(action, ())
        query = {k: v for k, v in params.items() if not k.startswith(in_body)} if in_body else params
        form = {k: v for k, v in params.items() if k.startswith(in_body)} if in_body else {}
        url = f"{self._endpoints.base_url(region)}/?{canonical_query(query)}"
        headers = {"x-acs-action": action, "x-acs-version": API_VERSION, "accept": "application/json"}
        if form:
            headers["content-type"] = "application/x-www-form-urlencoded"
        credentials = await self._credentials.get()
        request = self._http.build_request(
            "POST", url, headers=headers, content=canonical_query(form).encode("ascii")
        )
        auth = AcsV3Auth(credentials, **self._auth_kw)
        try:
            async with asyncio.timeout(budget):
                await self._limiter.acquire()
                response = await self._http.send(request, auth=auth)
        except (httpx.TransportError, TimeoutError) as exc:
            raise _transport_error(
                exc, action=action, region=region, host=request.url.host, resource_id=resource_id
            ) from exc
        try:
            body = translate_response(response, action=action, resource_id=resource_id)
        except CloudError as err:
            if is_throttling(err.code):
                self._limiter.throttled()
            log.warning(
                "vpc call failed",
                extra={
                    "action": action,
                    "region": region,
                    "status": response.status_code,
                    "request_id": err.request_id,
                    "code": err.code,
                },
            )
            raise
        self._limiter.succeeded()
        log.info(
            "vpc call",
            extra={
                "action": action,
                "region": region,
                "status": response.status_code,
                "request_id": body.get("RequestId"),
                "code": None,
            },
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("vpc answer %s: %s", action, redact(body))
        return body

    def _retry_hook(self, *, token_bound: bool, started: float) -> Callable[[BaseException], bool | float]:
        """Stamina's backoff hook: which errors to retry, and Alibaba's ``x-acs-retry-after`` when given.

        A call carrying a ClientToken is retried only after an ambiguous failure (no answer, 5xx):
        Alibaba replays the first answer to a reused token, so resending it after a definite
        rejection (throttled, busy) would only get the same rejection; the caller decides then.
        """

        def hook(exc: BaseException) -> bool | float:
            if not isinstance(exc, CloudError) or exc.retry is not RetryClass.TRANSIENT:
                return False
            if token_bound and exc.definite:
                return False
            hint = exc.retry_after if isinstance(exc, CloudApiError) else None
            if hint is None:
                return True
            # Waiting as told would pass the deadline: report the error now instead.
            return hint if hint < self._deadline - (self._monotonic() - started) else False

        return hook

    async def _call(
        self,
        action: str,
        region: str,
        params: Mapping[str, str],
        *,
        resource_id: str | None = None,
    ) -> dict[str, Any]:
        """Call ``action`` with transient retries inside the API deadline; ``params`` stay the same."""
        started = self._monotonic()
        last: CloudError | None = None
        async for attempt in stamina.retry_context(
            on=self._retry_hook(token_bound="ClientToken" in params, started=started),
            attempts=self._max_attempts,
            timeout=self._deadline,
            wait_initial=self._wait_initial,
            wait_max=self._wait_max,
            wait_jitter=self._wait_jitter,
        ):
            with attempt:
                # Each attempt gets what is left of the deadline, so the last one cannot overrun it;
                # a back-off that used it all up ends with the error that caused it, not a timeout.
                remaining = self._deadline - (self._monotonic() - started)
                if remaining <= 0 and last is not None:
                    raise last
                try:
                    return await self._send(
                        action, region, params, resource_id=resource_id, budget=max(0.001, remaining)
                    )
                except CloudError as err:
                    err.after_ambiguous = last is not None and (last.after_ambiguous or not last.definite)
                    last = err
                    raise
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _get(
        self,
        model: type[_ModelT],
        action: str,
        region: str,
        params: Mapping[str, str],
        *,
        resource_id: str | None = None,
        shared: bool = False,
    ) -> _ModelT:
        if shared:
            return await self._shared_get(model, action, region, params, resource_id=resource_id)
        body = await self._call(action, region, params, resource_id=resource_id)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            # A shape we cannot read will not change on retry.
            info = dataclasses.replace(
                lookup(TRANSPORT_BAD_RESPONSE, http_status=200), retry=RetryClass.NEVER
            )
            raise CloudTransportError(
                f"{action}: answer does not have the expected shape ({exc.error_count()} problems)",
                info=info,
                request_id=body.get("RequestId"),
                action=action,
                resource_id=resource_id,
            ) from exc

    async def _shared_get(
        self,
        model: type[_ModelT],
        action: str,
        region: str,
        params: Mapping[str, str],
        *,
        resource_id: str | None,
    ) -> _ModelT:
        """:meth:`_get`, joining an identical read of this client's already on the way (:class:`SharedReads`)."""
        key: ReadKey = (action, region, tuple(sorted(params.items())))
        answer = await self._shared.join(
            key, lambda: self._get(model, action, region, params, resource_id=resource_id)
        )
        assert isinstance(answer, model)  # noqa: S101 - the key includes the action, hence the model
        return answer

    async def _all_pages(
        self,
        model: type[_ModelT],
        items: Callable[[_ModelT], list[_ItemT]],
        action: str,
        region: str,
        params: Mapping[str, str],
        *,
        resource_id: str | None = None,
        shared: bool = False,
    ) -> list[_ItemT]:
        collected: list[_ItemT] = []
        for number in range(1, _MAX_PAGES + 1):
            page_params = {**params, "PageNumber": str(number), "PageSize": str(PAGE_SIZE)}
            page = await self._get(model, action, region, page_params, resource_id=resource_id, shared=shared)
            got = items(page)
            collected.extend(got)
            if not got or not (isinstance(page, Page) and page.has_more):
                break
        return collected

    # --- operations ----------------------------------------------------------------------------------

    async def describe_vpn_connection_detail(
        self, *, region: str, vco_id: str, shared: bool = False
    ) -> VpnConnectionDetail:
        """DescribeVpnConnection: the full connection (secrets stay SecretStr).

        ``shared``: the answer may be that of the same read already on the way (see _shared_get).
        """
        return await self._get(
            VpnConnectionDetail,
            "DescribeVpnConnection",
            region,
            {"RegionId": region, "VpnConnectionId": vco_id},
            resource_id=vco_id,
            shared=shared,
        )

    async def describe_vpn_connections(
        self,
        *,
        region: str,
        vpn_gateway_id: str | None = None,
        customer_gateway_id: str | None = None,
        vpn_connection_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        shared: bool = False,
    ) -> list[VpnConnectionDetail]:
        """DescribeVpnConnections: every page, 50 at a time; ``tags`` filter (``Tag.N.Key/Value``, all must match)."""
        params = {"RegionId": region}
        for name, value in (
            ("VpnGatewayId", vpn_gateway_id),
            ("CustomerGatewayId", customer_gateway_id),
            ("VpnConnectionId", vpn_connection_id),
        ):
            if value:
                params[name] = value
        for index, (key, tag_value) in enumerate((tags or {}).items(), 1):
            params |= {f"Tag.{index}.Key": key, f"Tag.{index}.Value": tag_value}
        return await self._all_pages(
            DescribeVpnConnectionsPage,
            lambda page: page.items,
            "DescribeVpnConnections",
            region,
            params,
            resource_id=vpn_connection_id or vpn_gateway_id,
            shared=shared,
        )

    async def describe_vpn_gateway_detail(
        self, *, region: str, gateway_id: str, shared: bool = False
    ) -> VpnGatewayDetail:
        """DescribeVpnGateway (``shared`` as for :meth:`describe_vpn_connection_detail`)."""
        return await self._get(
            VpnGatewayDetail,
            "DescribeVpnGateway",
            region,
            {"RegionId": region, "VpnGatewayId": gateway_id},
            resource_id=gateway_id,
            shared=shared,
        )

    async def describe_customer_gateway_detail(
        self, *, region: str, customer_gateway_id: str
    ) -> CustomerGatewayDetail:
        """DescribeCustomerGateway: one customer gateway (``InvalidCustomerGatewayInstanceId.NotFound`` if gone)."""
        return await self._get(
            CustomerGatewayDetail,
            "DescribeCustomerGateway",
            region,
            {"RegionId": region, "CustomerGatewayId": customer_gateway_id},
            resource_id=customer_gateway_id,
        )

    async def delete_vpn_connection(self, *, region: str, vco_id: str, client_token: str) -> str:
        """DeleteVpnConnection with ``client_token`` on every attempt; return the RequestId.

        Only ambiguous failures are retried here (see :meth:`_retry_hook`); a definite rejection
        is raised for the workflow, which resends with a new token if it is worth it.
        """
        params = {
            "RegionId": region,
            "VpnConnectionId": vco_id,
            "ClientToken": validate_client_token(client_token),
        }
        answer = await self._get(DeleteResponse, "DeleteVpnConnection", region, params, resource_id=vco_id)
        return answer.request_id

    async def describe_vpn_route_entries(
        self, *, region: str, gateway_id: str, route_entry_type: str = "custom", shared: bool = False
    ) -> list[VpnRouteEntry]:
        """DescribeVpnRouteEntries (destination-based ``custom`` or ``bgp``), every page."""
        return await self._all_pages(
            VpnRouteEntriesPage,
            lambda page: page.items,
            "DescribeVpnRouteEntries",
            region,
            {"RegionId": region, "VpnGatewayId": gateway_id, "RouteEntryType": route_entry_type},
            resource_id=gateway_id,
            shared=shared,
        )

    async def describe_vpn_pbr_route_entries(
        self, *, region: str, gateway_id: str, shared: bool = False
    ) -> list[VpnPbrRouteEntry]:
        """DescribeVpnPbrRouteEntries (policy-based routes), every page."""
        return await self._all_pages(
            VpnPbrRouteEntriesPage,
            lambda page: page.items,
            "DescribeVpnPbrRouteEntries",
            region,
            {"RegionId": region, "VpnGatewayId": gateway_id},
            shared=shared,
            resource_id=gateway_id,
        )

    async def describe_regions(self, *, accept_language: str = "en-US") -> list[Region]:
        """DescribeRegions, asked at the default region's endpoint (the action takes no RegionId)."""
        answer = await self._get(
            DescribeRegionsResponse,
            "DescribeRegions",
            self._default_region,
            {"AcceptLanguage": accept_language},
        )
        return answer.items

    async def create_vpn_connection(
        self,
        *,
        region: str,
        spec: VpnConnectionSpec,
        client_token: str,
    ) -> CreateVpnConnectionResponse:
        """CreateVpnConnection with ``client_token``; the gateway is ``updating`` until it is done."""
        params = {
            "RegionId": region,
            **spec.to_params(),
            "ClientToken": validate_client_token(client_token),
        }
        return await self._get(
            CreateVpnConnectionResponse,
            "CreateVpnConnection",
            region,
            params,
            resource_id=spec.vpn_gateway_id,
        )

    async def create_vpn_route_entry(
        self,
        *,
        region: str,
        gateway_id: str,
        route_dest: str,
        next_hop: str,
        client_token: str,
        weight: int = 100,
        publish_vpc: bool = True,
        description: str | None = None,
    ) -> CreateVpnRouteEntryResponse:
        """CreateVpnRouteEntry: a destination-based route to connection ``next_hop``."""
        params = route_entry_params(
            region=region,
            gateway_id=gateway_id,
            route_dest=route_dest,
            next_hop=next_hop,
            weight=weight,
            publish_vpc=publish_vpc,
            description=description,
            client_token=validate_client_token(client_token),
        )
        return await self._get(
            CreateVpnRouteEntryResponse,
            "CreateVpnRouteEntry",
            region,
            params,
            resource_id=gateway_id,
        )

    async def create_vpn_pbr_route_entry(
        self,
        *,
        region: str,
        gateway_id: str,
        route_source: str,
        route_dest: str,
        next_hop: str,
        client_token: str,
        priority: int = 10,
        weight: int = 100,
        publish_vpc: bool = True,
        description: str | None = None,
    ) -> CreateVpnPbrRouteEntryResponse:
        """CreateVpnPbrRouteEntry: a policy-based route from ``route_source`` to ``route_dest``."""
        params = route_entry_params(
            region=region,
            gateway_id=gateway_id,
            route_dest=route_dest,
            next_hop=next_hop,
            weight=weight,
            publish_vpc=publish_vpc,
            description=description,
            client_token=validate_client_token(client_token),
        )
        params |= {"RouteSource": route_source, "Priority": str(priority)}
        return await self._get(
            CreateVpnPbrRouteEntryResponse,
            "CreateVpnPbrRouteEntry",
            region,
            params,
            resource_id=gateway_id,
        )
