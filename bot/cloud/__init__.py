"""Alibaba Cloud VPC: the ACS3 signer, the error table, response models, the client and its adapter."""

from __future__ import annotations

from bot.cloud.adapter import VpcAdapter
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
    "VpcAdapter",
    "VpcClient",
    "build_credentials_provider",
    "lookup",
    "redact",
]
