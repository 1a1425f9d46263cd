"""A container's health check: ``python -m compose.healthcheck [URL]``.

Exits 0 when ``URL`` answers 200 within two seconds, else 1. The image is slim (no curl)
and this needs nothing but the standard library. Without an argument it checks
``TWOPC_HEALTHCHECK_URL``, else the coordinator's ``/readyz`` on its default port: what
the image's own ``HEALTHCHECK`` runs; the compose stack names each service's URL.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

__all__ = ["DEFAULT_URL", "healthy", "main"]

DEFAULT_URL = "http://127.0.0.1:7070/readyz"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    url = args[0] if args else os.environ.get("TWOPC_HEALTHCHECK_URL", DEFAULT_URL)
    if healthy(url):
        return 0
    print(f"unhealthy: {url} did not answer 200", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
