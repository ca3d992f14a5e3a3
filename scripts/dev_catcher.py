"""A catcher for what `scripts/dev` sends out: an SMTP server (aiosmtpd) that keeps every
message it accepts as an .eml file, and an HTTP server that answers 200 to any request and
keeps it as a .json file (method, path, headers, body), so the README's e-mail and webhook
examples work on a machine without a mail server or the internet.

    python scripts/dev_catcher.py --smtp-port 1025 --http-port 8082 --dir DIR

Mails land in DIR/mail/NNNNNN.eml, requests in DIR/webhooks/NNNNNN.json, numbered in the
order they arrived. Stops on SIGTERM or SIGINT.
"""

import argparse
import itertools
import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def numbered(directory, suffix):
    """The next free NNNNNN<suffix> in `directory` (continuing after a restart)."""
    os.makedirs(directory, exist_ok=True)
    taken = [int(n.split(".")[0]) for n in os.listdir(directory) if n.split(".")[0].isdigit()]
    counter = itertools.count(max(taken, default=0) + 1)
    lock = threading.Lock()

    def next_path():
        with lock:
            return os.path.join(directory, f"{next(counter):06d}{suffix}")

    return next_path


def write_atomically(path, data):
    """Write to a temporary name, then rename: a reader never sees half a file."""
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


class Mailbox:
    def __init__(self, next_path):
        self.next_path = next_path

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        write_atomically(self.next_path(), content)
        return "250 OK"


def hook_handler(next_path):
    class Hook(BaseHTTPRequestHandler):
        def record(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
            write_atomically(next_path(), json.dumps(request, indent=2).encode())
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"received":true}')

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = record

        def log_message(self, *args):
            pass

    return Hook


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--smtp-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--dir", required=True)
    a = p.parse_args()

    smtp = Controller(Mailbox(numbered(os.path.join(a.dir, "mail"), ".eml")), hostname="127.0.0.1", port=a.smtp_port)
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", a.http_port), hook_handler(numbered(os.path.join(a.dir, "webhooks"), ".json")))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"catching mail on 127.0.0.1:{a.smtp_port} and webhooks on 127.0.0.1:{a.http_port} into {a.dir}", flush=True)
    stop.wait()
    http.shutdown()
    smtp.stop()


if __name__ == "__main__":
    main()
