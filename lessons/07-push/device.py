#!/usr/bin/env python3
"""A push device in Python, with nothing but its standard library.

Written from README.md alone: it listens on a socket of its own, registers
that address with the push service, and shows each notification pushed to
it once, refusing any push without its token. Lines typed as
`to bob: text` go to bob through the service. Same output as
`07-push device`:

    python3 lessons/07-push/device.py --name py --connect 127.0.0.1:7007
"""

import argparse
import hmac
import os
import socket
import sys
import threading

MAX_LINE = 1024  # the longest line, its "\n" included
MAX_BODY = 4096  # the longest notification body
PUSH_IDLE = 5.0  # seconds a push connection may stay silent
REMEMBERED_IDS = 4096  # ids remembered, to show each notification once


def read_line(reader):
    """One line framed by its "\\n", without it; None at the end or past MAX_LINE."""
    line = reader.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        return None
    return line.rstrip(b"\r\n").decode("utf-8", "replace")


def split_addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def request(service, line, body=b""):
    """One request to the service, and its one reply line."""
    with socket.create_connection(split_addr(service), timeout=10) as conn:
        conn.sendall(line.encode() + b"\n" + body)
        reply = read_line(conn.makefile("rb"))
    if reply is None:
        raise OSError("the service closed the connection without a reply")
    return reply


def show(text):
    # Control characters would let a notification rewrite the screen.
    print("".join(" " if ch < " " or ch == "\x7f" else ch for ch in text), flush=True)


class Shown:
    """The ids already shown: a push sent again because its ACK was lost
    is acknowledged again, and not shown again."""

    def __init__(self):
        self.ids, self.order, self.lock = set(), [], threading.Lock()

    def first_time(self, note_id):
        with self.lock:
            if note_id in self.ids:
                return False
            self.ids.add(note_id)
            self.order.append(note_id)
            if len(self.order) > REMEMBERED_IDS:
                self.ids.discard(self.order.pop(0))
            return True


def take_pushes(conn, token, shown):
    """One push connection: frames until the service closes."""
    conn.settimeout(PUSH_IDLE)
    reader = conn.makefile("rb")
    try:
        while True:
            line = read_line(reader)
            if line is None:
                return
            words = line.split()
            # compare_digest: as long whatever the first wrong digit.
            if len(words) < 2 or not hmac.compare_digest(words[1], token):
                conn.sendall(b"ERR wrong token\n")
                return
            if words[0] == "PUSH" and len(words) == 5 and words[2].isdigit() and words[4].isdigit():
                length = int(words[4])
                if length > MAX_BODY:
                    conn.sendall(b"ERR body too long\n")
                    return
                body = reader.read(length)
                if len(body) < length:
                    return
                if shown.first_time(int(words[2])):
                    show(f"#{words[2]} from {words[3]}: {body.decode('utf-8', 'replace')}")
                conn.sendall(f"ACK {words[2]}\n".encode())
            elif words[0] == "LOST" and len(words) == 3:
                show(f"! lost {words[2]} notifications while away")
                conn.sendall(b"ACK LOST\n")
            else:
                conn.sendall(b"ERR unknown frame\n")
                return
    except OSError:
        pass
    finally:
        conn.close()


def accept_pushes(listener, token, shown):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=take_pushes, args=(conn, token, shown), daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description="A push device, in Python")
    parser.add_argument("--name", required=True)
    # The lesson's port, 7007, moves with COURSE_PORT_BASE as the Rust device's does.
    port = int(os.environ.get("COURSE_PORT_BASE", "7000")) + 7
    parser.add_argument("--connect", default=f"127.0.0.1:{port}")
    parser.add_argument("--bind", default="127.0.0.1:0")
    args = parser.parse_args()

    listener = socket.create_server(split_addr(args.bind))
    host, port = listener.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        reply = request(args.connect, f"REGISTER {args.name} {host}:{port}")
    except OSError as error:
        sys.exit(f"error: cannot register with {args.connect}: {error}")
    if not reply.startswith("OK "):
        sys.exit(f"error: the service refused: {reply.removeprefix('ERR ')}")
    token = reply[3:]
    shown = Shown()
    threading.Thread(target=accept_pushes, args=(listener, token, shown), daemon=True).start()

    for line in sys.stdin:
        to, colon, text = line.strip().removeprefix("to ").partition(":")
        if not line.startswith("to ") or not colon:
            show("! type `to NAME: text` to send a message")
            continue
        body = text.strip().encode()
        try:
            reply = request(args.connect, f"TELL {args.name} {token} {to.strip()} {len(body)}", body)
        except OSError as error:
            reply = f"ERR {error}"
        if reply.startswith("OK "):
            show(f"sent #{reply[3:]} to {to.strip()}")
        else:
            show(f"! not sent to {to.strip()}: {reply.removeprefix('ERR ')}")


if __name__ == "__main__":
    main()
