"""Container health check: exit 0 if vpn-bot's /livez answers 200, else 1 (standard library only).

/livez is served on the operations listener, VPNBOT_METRICS_PORT (9464 by default), in both HTTP
and Socket Mode. It says whether the process and its event loop answer; a database or Slack outage
is /readyz's business and does not make the container unhealthy.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("VPNBOT_METRICS_PORT") or "9464"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=4) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
