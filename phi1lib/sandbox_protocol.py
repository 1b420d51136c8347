"""Sandbox wire format: length-prefixed JSON frames and plain-data values (exact builtin types only).

A value crosses from the program to the checker as JSON with tags for tuples, sets, bytes,
big ints, non-finite floats...; the other side rebuilds fresh objects, so nothing of the
program's (classes, patched methods) survives the trip.
"""

import json
import math
import os
import struct

MAX_FRAME = 64 << 20  # largest message P may send C (bytes)


class NotPlain(Exception):
    pass


def enc(x):
    t = type(x)
    if x is None or t is str or t is bool:
        return x
    if t is int:
        return x if -(2**53) < x < 2**53 else {"I": format(x, "x")}
    if t is float:
        return x if math.isfinite(x) else {"F": repr(x)}
    if t is list:
        return [enc(v) for v in x]
    if t is tuple:
        return {"T": [enc(v) for v in x]}
    if t is dict:
        return {"D": [[enc(k), enc(v)] for k, v in x.items()]}
    if t is set or t is frozenset:
        return {"S" if t is set else "Z": [enc(v) for v in x]}
    if t is bytes or t is bytearray:
        return {"B" if t is bytes else "A": x.hex()}
    if t is complex:
        return {"C": [enc(x.real), enc(x.imag)]}
    if t is range:
        return {"R": [x.start, x.stop, x.step]}
    raise NotPlain(t.__name__)


def dec(y):
    t = type(y)
    if t is list:
        return [dec(v) for v in y]
    if t is not dict:
        if y is None or t in (str, bool, int, float):
            return y
        raise NotPlain(t.__name__)
    (tag, v), = y.items()
    if tag == "I":
        return int(v, 16)
    if tag == "F":
        return float(v)
    if tag == "T":
        return tuple(dec(i) for i in v)
    if tag == "D":
        return {dec(k): dec(i) for k, i in v}
    if tag in "SZ":
        return (set if tag == "S" else frozenset)(dec(i) for i in v)
    if tag in "BA":
        return (bytes if tag == "B" else bytearray).fromhex(v)
    if tag == "C":
        return complex(dec(v[0]), dec(v[1]))
    if tag == "R":
        return range(*[int(i) for i in v])
    raise NotPlain(f"tag {tag!r}")


def send_frame(fd, obj):
    data = json.dumps(obj, allow_nan=False).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def recv_frame(fd, limit=MAX_FRAME):
    """One JSON frame from fd; None on EOF; ValueError if oversized or malformed."""
    def exact(n):
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    head = exact(4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > limit:
        raise ValueError(f"message of {n} bytes exceeds the {limit}-byte limit")
    body = exact(n)
    if body is None:
        return None
    return json.loads(body)
