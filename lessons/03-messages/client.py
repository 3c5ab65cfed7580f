#!/usr/bin/env python3
"""The mailbox client again, in Python, with nothing but its standard library.

It speaks the protocol of README.md to the Rust server: a protocol written
down is all two programs need to understand each other, whatever their
language. Same commands, same output as `03-messages client`:

    python3 lessons/03-messages/client.py --connect 127.0.0.1:7003 --user bob
"""

import argparse
import os
import socket
import sys

MAX_LINE = 1024  # the longest line, its "\n" included
MAX_BODY = 64 * 1024  # the longest message body


class ProtocolError(Exception):
    """The server said something the protocol does not allow."""


def read_line(reader):
    """One line framed by its "\\n", without it; at most MAX_LINE bytes."""
    # The limit is the argument: readline stops there even with no "\n".
    line = reader.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        if len(line) == MAX_LINE:
            raise ProtocolError("the server sent a line longer than the protocol allows")
        raise ProtocolError("the server closed the connection")
    return line.rstrip(b"\r\n").decode("utf-8", "replace")


def number(text, what):
    """A count or a length the server sent: decimal digits, nothing else."""
    # int() alone would take "-3", " 7" or "1_000", and raise ValueError on
    # anything else; a server's mistake is a ProtocolError, not a traceback.
    if not (text.isascii() and text.isdigit()):
        raise ProtocolError(f"{what} is not a number")
    return int(text)


def read_body(reader, length):
    """Exactly `length` bytes: a body is framed by its length, not by a line."""
    if length > MAX_BODY:
        raise ProtocolError(f"a body of {length} bytes is over the limit")
    # A buffered reader's read(n) waits for all n bytes, or the end of the
    # stream; a socket's recv(n) would return whatever has arrived.
    body = reader.read(length)
    if len(body) != length:
        raise ProtocolError("the server closed the connection inside a message")
    return body


def refused(reply):
    return "refused: " + reply.removeprefix("ERR ")


class Session:
    def __init__(self, sock):
        self.sock = sock
        # One buffered reader for the whole connection, as in the Rust client.
        self.reader = sock.makefile("rb")

    def request(self, data):
        self.sock.sendall(data)
        return read_line(self.reader)

    def send(self, to, text):
        body = text.encode("utf-8")
        reply = self.request(f"SEND {to} {len(body)}\n".encode() + body)
        if reply.startswith("OK "):
            return "sent #" + reply.removeprefix("OK ")
        return refused(reply)

    def count(self):
        reply = self.request(b"COUNT\n")
        if reply.startswith("OK "):
            return reply.removeprefix("OK ") + " waiting"
        return refused(reply)

    def fetch(self):
        reply = self.request(b"FETCH\n")
        if not reply.startswith("MSGS "):
            return refused(reply)
        count = number(reply.removeprefix("MSGS "), f"the count in `{reply}`")
        shown = [f"{count} fetched"]
        for _ in range(count):
            header = read_line(self.reader)
            words = header.split(" ")
            if len(words) != 4 or words[0] != "MSG":
                raise ProtocolError(f"the server sent `{header}` where a MSG line belongs")
            _, message_id, sender, length = words
            body = read_body(self.reader, number(length, f"the length in `{header}`"))
            text = body.decode("utf-8", "replace")
            shown.append(f"#{message_id} from {sender}: {text}")
        return "\n".join(shown)


def split_address(address):
    """`127.0.0.1:7003` or `[::1]:7003` into a host and a port number."""
    host, _, port = address.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise SystemExit(f"error: cannot connect to {address}: not an address like 127.0.0.1:7003")
    return host.strip("[]"), int(port)


def run(address, user):
    host, port = split_address(address)
    try:
        sock = socket.create_connection((host, port))
    except ConnectionRefusedError:
        raise SystemExit(f"error: nothing is listening at {address}")
    except OSError as error:
        raise SystemExit(f"error: cannot connect to {address}: {error}")
    with sock:
        session = Session(sock)
        reply = session.request(f"USER {user}\n".encode())
        if reply.startswith("ERR "):
            reason = reply.removeprefix("ERR ")
            raise SystemExit(f"error: the server refused the name {user}: {reason}")
        if reply != "OK":
            raise SystemExit(
                f"error: the server at {address} did not answer as a mailbox server does: "
                f"it answered `USER {user}` with `{reply}`"
            )
        for line in sys.stdin:
            command, _, rest = line.strip().partition(" ")
            if command == "send":
                to, _, text = rest.partition(" ")
                shown = session.send(to, text)
            elif command == "count":
                shown = session.count()
            elif command == "fetch":
                shown = session.fetch()
            elif command == "quit":
                break
            elif command == "":
                continue
            else:
                shown = "commands: send <to> <text>, count, fetch, quit"
            print(shown, flush=True)
        reply = session.request(b"QUIT\n")
        if reply != "BYE":
            raise SystemExit(f"error: the server answered QUIT with `{reply}`")


def main():
    parser = argparse.ArgumentParser(description="A mailbox client, in Python.")
    # As the Rust programs do: COURSE_PORT_BASE moves every lesson's port.
    base = os.environ.get("COURSE_PORT_BASE", "").strip()
    port = min(int(base) + 3, 65535) if base.isdigit() and int(base) <= 65535 else 7003
    parser.add_argument("--connect", default=f"127.0.0.1:{port}", help="the server's address")
    parser.add_argument("--user", required=True, help="who you are")
    arguments = parser.parse_args()
    try:
        run(arguments.connect, arguments.user)
    # UnicodeError: standard input that is not UTF-8 text.
    except (ProtocolError, OSError, UnicodeError) as error:
        raise SystemExit(f"error: {error}")


if __name__ == "__main__":
    main()
