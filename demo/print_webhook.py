"""A local webhook that prints every alert docktrail sends it (apprise `json://`).

    python3 demo/print_webhook.py 8899      # then: url: json://127.0.0.1:8899/alerts

Standard library only; listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


class PrintingHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1_000_000))
        try:
            message = json.loads(body)
            text = f"{message.get('title', '')}\n    {message.get('message', '')[:400]}"
        except (ValueError, AttributeError):
            text = body[:400].decode(errors="replace")
        print(f"[webhook] {text}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8899
    print(f"[webhook] listening on http://127.0.0.1:{port}/", flush=True)
    HTTPServer(("127.0.0.1", port), PrintingHandler).serve_forever()


if __name__ == "__main__":
    main()
