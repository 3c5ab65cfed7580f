#!/usr/bin/env python3
"""A lesson 09 client in Python, from README.md alone: standard library only.

It joins, then prints every snapshot it receives and sends INPUTS every
tick (its sign of life). With --walk it also presses right once a second,
so you see your own player move in the server's snapshots.

    python3 lessons/09-game/client.py --connect 127.0.0.1:7009 --name py
"""

import argparse
import socket
import struct
import time

PROTOCOL_ID = 0x43415339
JOIN, WELCOME, FULL, INPUTS, SNAPSHOT, LEAVE = 1, 2, 3, 4, 5, 6
RIGHT = 8
HEADER = struct.Struct(">IHHIB")  # protocol id, sequence, ack, ack bits, kind


class Link:
    """Our sequence numbers out; the newest of theirs in, and the 32 before."""

    def __init__(self):
        self.sequence = 0
        self.ack = 0
        self.ack_bits = 0
        self.heard = False

    def header(self, kind):
        self.sequence = (self.sequence + 1) % 65536
        return HEADER.pack(PROTOCOL_ID, self.sequence, self.ack, self.ack_bits, kind)

    def received(self, sequence):
        if not self.heard:
            self.heard, self.ack, self.ack_bits = True, sequence, 0
            return
        ahead = (sequence - self.ack) % 65536
        if 0 < ahead < 32768:  # newer, allowing for the wrap after 65535
            self.ack_bits = ((self.ack_bits << 1 | 1) << (ahead - 1)) & 0xFFFFFFFF
            self.ack = sequence
        elif 0 < 65536 - ahead <= 32:  # older, within the 32 remembered
            self.ack_bits |= 1 << (65536 - ahead - 1)


def parse(datagram):
    """(sequence, kind, body) of a datagram of ours, or None to drop it."""
    if len(datagram) < HEADER.size or len(datagram) > 1200:
        return None
    protocol, sequence, _ack, _bits, kind = HEADER.unpack_from(datagram)
    if protocol != PROTOCOL_ID:
        return None
    return sequence, kind, datagram[HEADER.size:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default="127.0.0.1:7009")
    parser.add_argument("--name", default="py")
    parser.add_argument("--walk", action="store_true", help="press right once a second")
    args = parser.parse_args()
    host, port = args.connect.rsplit(":", 1)
    # The address datagrams come from is numeric: resolve a name such as
    # localhost once, or no answer would ever match it.
    server = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_DGRAM)[0][4]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    link = Link()

    # JOIN, again every 250 ms, until WELCOME: either may be lost. 5 s of
    # silence, and no server is there.
    name = args.name.encode("ascii")
    give_up = time.monotonic() + 5
    while True:
        if time.monotonic() > give_up:
            raise SystemExit(f"no answer from {args.connect} within 5 s: is the server running?")
        sock.sendto(link.header(JOIN) + bytes([len(name)]) + name, server)
        sock.settimeout(0.25)
        try:
            datagram, sender = sock.recvfrom(2048)
        except socket.timeout:
            continue
        got = parse(datagram)
        if sender != server or got is None:
            continue
        sequence, kind, body = got
        if kind == FULL:
            raise SystemExit("the server is full")
        if kind == WELCOME and len(body) == 10:
            link.received(sequence)
            my_id, token, tick_hz = struct.unpack(">BQB", body)
            print(f"joined as player {my_id} ({tick_hz} snapshots a second)")
            break

    pending = []  # (number, buttons) the server has not confirmed yet
    pressed = 0
    next_press = time.monotonic() + 1.0

    def send_inputs():
        # Every unconfirmed input, in every datagram: one lost loses nothing.
        body = struct.pack(">BQB", my_id, token, len(pending[:32]))
        body += b"".join(struct.pack(">IB", n, b) for n, b in pending[:32])
        sock.sendto(link.header(INPUTS) + body, server)

    # Speak first: snapshots come only once the server has heard INPUTS from
    # this address with the token. Should they be lost, say it again every
    # 250 ms; 3 s without a snapshot, and the server has gone.
    send_inputs()
    last_snapshot = time.monotonic()
    sock.settimeout(0.25)
    try:
        while True:
            # Checked before each read, not only when one times out: other
            # datagrams coming all the time must not hide a server gone.
            if time.monotonic() - last_snapshot > 3.0:
                print("no snapshot for 3 s: the server has gone")
                break
            try:
                datagram, sender = sock.recvfrom(2048)
            except socket.timeout:
                send_inputs()
                continue
            got = parse(datagram)
            if sender != server or got is None or got[1] != SNAPSHOT:
                continue
            sequence, _kind, body = got
            if len(body) < 9 or len(body) != 9 + 5 * body[8]:
                continue
            last_snapshot = time.monotonic()
            link.received(sequence)
            tick, applied, count = struct.unpack_from(">IIB", body)
            players = [struct.unpack_from(">BHH", body, 9 + 5 * i) for i in range(count)]
            print(f"tick {tick} applied {applied} "
                  + " ".join(f"{i}:{x / 100:.2f},{y / 100:.2f}" for i, x, y in players),
                  flush=True)
            pending = [(n, b) for n, b in pending if n > applied]
            if args.walk and time.monotonic() >= next_press:
                pressed += 1
                pending.append((pressed, RIGHT))
                next_press += 1.0
            send_inputs()
    except KeyboardInterrupt:
        pass
    finally:
        sock.sendto(link.header(LEAVE) + struct.pack(">BQ", my_id, token), server)


if __name__ == "__main__":
    main()
