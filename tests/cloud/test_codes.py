"""The error table: every code the brief names, its retry class and who must act."""

from __future__ import annotations

import pytest

from bot.cloud.codes import ERROR_TABLE, lookup
from bot.errors import RetryClass, Who

# The error table of /work/shared/reference/DeleteVpnConnection.txt, verbatim.
DELETE_VPN_CONNECTION_CODES = [
    "VpnGateway.Configuring",
    "VpnTask.CONFLICT",
    "VpnGateway.FinancialLocked",
    "InternalError",
    "InvalidVpnGatewayInstanceId.NotFound",
    "Forbbiden.SubUser",
    "Forbidden",
    "InvalidVpnConnectionInstanceId.NotFound",
]

TRANSIENT = [
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "Rejected.Throttling",
    "ServiceUnavailable",
    "InternalError",
    "UnknownError",
    "SignatureNonceUsed",
    "InvalidTimeStamp.Expired",
    "Transport.Timeout",
    "Transport.ConnectError",
    "Transport.BadResponse",
]
BUSY = [
    "VpnGateway.Configuring",
    "VpnTask.CONFLICT",
    "VpnConnection.Configuring",
    "Appliance.Configuring",
    "TaskConflict",
]
NEVER = [
    "VpnGateway.FinancialLocked",
    "InvalidVpnGatewayInstanceId.NotFound",
    "Forbbiden.SubUser",
    "Forbidden.SubUser",
    "Forbidden",
    "InvalidVpnConnectionInstanceId.NotFound",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId.NotFound",
    "Forbidden.RAM",
    "Forbidden.AccessKeyDisabled",
    "IdempotentParameterMismatch",
    "MissingParameter",
    "InvalidParameter",
    "InvalidRegionId.NotFound",
]


def test_every_delete_vpn_connection_code_is_in_the_table() -> None:
    assert set(DELETE_VPN_CONNECTION_CODES) <= set(ERROR_TABLE)


@pytest.mark.parametrize(
    ("code", "retry"),
    [(c, RetryClass.TRANSIENT) for c in TRANSIENT]
    + [(c, RetryClass.BUSY) for c in BUSY]
    + [(c, RetryClass.NEVER) for c in NEVER],
)
def test_retry_class(code: str, retry: RetryClass) -> None:
    assert code in ERROR_TABLE
    assert lookup(code).retry is retry


@pytest.mark.parametrize("code", sorted(ERROR_TABLE))
def test_every_entry_says_what_happened_and_what_to_do(code: str) -> None:
    info = ERROR_TABLE[code]
    assert info.code == code
    assert info.friendly.endswith(".")
    assert len(info.action) > 10
    assert isinstance(info.who, Who)


def test_lookup_keeps_alibaba_message_and_status() -> None:
    info = lookup("VpnGateway.Configuring", message="The specified service is configuring.", http_status=409)
    assert info.api_message == "The specified service is configuring."
    assert info.http_status == 409
    assert info.retry is RetryClass.BUSY


@pytest.mark.parametrize("code", ["Throttling.Concurrency", "Throttling.User.Burst", "ThrottlingX"])
def test_any_throttling_prefix_is_transient_and_keeps_its_code(code: str) -> None:
    info = lookup(code, message="flow control", http_status=400)
    assert info.retry is RetryClass.TRANSIENT
    assert info.code == code
    assert info.api_message == "flow control"


@pytest.mark.parametrize("code", ["Forbbiden.SubUser", "Forbidden.SubUser"])
def test_both_spellings_of_the_sub_user_code(code: str) -> None:
    info = lookup(code)
    assert info.code == code
    assert info.who is Who.ADMIN
    assert info.retry is RetryClass.NEVER
    assert info.friendly == ERROR_TABLE["Forbidden.SubUser"].friendly


def test_unknown_code_keeps_code_and_message_and_is_never_retried() -> None:
    info = lookup("Vpc.SomethingNew", message="Something new went wrong.", http_status=400)
    assert info.code == "Vpc.SomethingNew"
    assert info.api_message == "Something new went wrong."
    assert "Vpc.SomethingNew" in info.friendly
    assert "Something new went wrong." in info.friendly
    assert info.retry is RetryClass.NEVER
    assert info.who is Who.ADMIN


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_unknown_5xx_code_is_transient(status: int) -> None:
    assert lookup("Vpc.SomethingNew", http_status=status).retry is RetryClass.TRANSIENT


def test_who_must_act() -> None:
    locked = lookup("VpnGateway.FinancialLocked")
    assert locked.who is Who.ACCOUNT_OWNER
    assert "top up" in locked.action
    ram = lookup("Forbidden.RAM")
    assert ram.who is Who.ADMIN
    assert "vpc:DeleteVpnConnection" in ram.action
    assert "vpc:DescribeVpnGateway" in ram.action
    gone = lookup("InvalidVpnConnectionInstanceId.NotFound")
    assert gone.who is Who.REQUESTER
    assert "id" in gone.action
    assert "region" in gone.action
    assert lookup("Throttling").who is Who.NOBODY


def test_an_unknown_codes_text_from_alibaba_is_shown_inert() -> None:
    """Alibaba's code and message for a code the bot does not know cannot restyle the reply."""
    info = lookup("Odd.`Code`", message="*now* ```fenced```\n> quoted _it_", http_status=400)
    assert "```" not in info.friendly
    assert "\n" not in info.friendly
    assert "(`Odd.ˋCodeˋ`)" in info.friendly
    assert "`*now* ˋˋˋfencedˋˋˋ > quoted _it_`" in info.friendly
    # Every backtick left is one of the spans' own: the outside text sits inside them.
    assert info.friendly.count("`") == 4
