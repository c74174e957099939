"""Container health check: exit 0 if vpn-bot's /healthz answers 200, else 1 (standard library only).

HTTP mode serves /healthz on VPNBOT_PORT; Socket Mode (SLACK_APP_TOKEN set) on VPNBOT_METRICS_PORT,
which defaults to VPNBOT_PORT.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("VPNBOT_PORT") or "3000"
    if os.environ.get("SLACK_APP_TOKEN"):
        port = os.environ.get("VPNBOT_METRICS_PORT") or port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
