"""Alibaba Cloud VPC: the ACS3 signer, the error table, response models and the client."""

from __future__ import annotations

from bot.cloud.client import VpcClient, redact
from bot.cloud.codes import ERROR_TABLE, lookup
from bot.cloud.credentials import (
    ChainCredentialsProvider,
    CredentialsProvider,
    StaticCredentialsProvider,
    build_credentials_provider,
)
from bot.cloud.signer import AcsV3Auth, Credentials

__all__ = [
    "ERROR_TABLE",
    "AcsV3Auth",
    "ChainCredentialsProvider",
    "Credentials",
    "CredentialsProvider",
    "StaticCredentialsProvider",
    "VpcClient",
    "build_credentials_provider",
    "lookup",
    "redact",
]
