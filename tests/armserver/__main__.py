"""``python -m armserver --port 0 --cert-dir DIR``: serve until SIGTERM/SIGINT (or stdin EOF).

The first stdout line is the port; the second a JSON object with ``url`` and ``ca_file``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from .server import (
    DEFAULT_BLOB_ENDPOINT_TEMPLATE,
    DEFAULT_IMAGE_DELAY,
    DEFAULT_PAGE_SIZE,
    ArmServer,
)
from .tokens import DEFAULT_TENANT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m armserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port (printed)")
    parser.add_argument(
        "--cert-dir",
        help="where ca.pem/server.pem/server.key are (made if absent); "
        "default: a temporary directory",
    )
    parser.add_argument(
        "--state-file",
        help="JSON file the state is saved to after each write and loaded from at start",
    )
    parser.add_argument(
        "--image-delay",
        type=float,
        default=DEFAULT_IMAGE_DELAY,
        help="seconds an image stays Creating (default %(default)s)",
    )
    parser.add_argument(
        "--lro-delay",
        type=float,
        default=0.0,
        help="seconds a Location-polled operation stays 202 (default %(default)s)",
    )
    parser.add_argument(
        "--lro-retry-after",
        type=float,
        default=None,
        help="Retry-After sent on long-running-operation responses (default: none)",
    )
    parser.add_argument(
        "--blob-endpoint-template",
        default=DEFAULT_BLOB_ENDPOINT_TEMPLATE,
        help="primaryEndpoints.blob of created accounts (default %(default)s)",
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        help="items per page of a list, more behind nextLink; 0: one page (default %(default)s)",
    )
    parser.add_argument(
        "--audience",
        action="append",
        help="a token audience to accept (repeatable; default: public ARM's four)",
    )
    parser.add_argument("--tenant", default=DEFAULT_TENANT, help="the tenant tokens must be from")
    parser.add_argument(
        "--validate-source-blobs",
        action="store_true",
        help="read an image's source blob (keys via /_test/config storage_keys) before making it",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (the parent that started us died)",
    )
    parser.add_argument("--verbose", action="store_true", help="log request lines to stderr")
    args = parser.parse_args(argv)

    server = ArmServer(
        host=args.host,
        port=args.port,
        cert_dir=args.cert_dir,
        verbose=args.verbose,
        image_delay=args.image_delay,
        lro_delay=args.lro_delay,
        lro_retry_after=args.lro_retry_after,
        blob_endpoint_template=args.blob_endpoint_template,
        state_file=args.state_file,
        page_size=args.page_size,
        audiences=args.audience,
        tenant=args.tenant,
        validate_source_blobs=args.validate_source_blobs,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(server.port, flush=True)
        print(json.dumps({"url": server.url, "ca_file": server.ca_file}), flush=True)
        if args.exit_on_stdin_eof:

            def watch_stdin() -> None:
                for _ in sys.stdin:
                    pass
                stop.set()

            threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
