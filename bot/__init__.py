"""vpn-bot: delete Alibaba Cloud IPsec-VPN connections from Slack, safely."""

__version__ = "0.1.0"
