"""Sandbox wire format: length-prefixed JSON frames and plain-data values (exact builtin types only).

A value crosses from the program to the checker as JSON with tags for tuples, sets, bytes,
big ints, non-finite floats...; the other side rebuilds fresh objects, so nothing of the
program's (classes, patched methods) survives the trip. Values a reference harness would compare
equal cross as their plain equivalent, read through the builtin base type's own methods (so an
overridden `__eq__`, `__iter__` or `items` plays no part): an instance of a subclass of a builtin
container or scalar as that builtin (Counter/defaultdict/OrderedDict -> dict, namedtuple -> tuple,
IntEnum -> int, numpy.float64 -> float), UserDict/UserList/UserString as the data they wrap, a numpy scalar as the Python scalar of its `.item()`, a
Fraction or Decimal as a fresh Fraction or Decimal. Anything else may cross only as a
*reference* ({"H": [id, type name]}) when the caller passes `ref`: the program keeps the object,
the checker gets an opaque handle it can call, read and set attributes on, never compare.
"""

import builtins
import collections
import decimal
import fractions
import json
import math
import os
import struct
import sys

MAX_FRAME = 64 << 20  # largest message P may send C (bytes)
MAX_REFS = 100_000  # program objects one job may hand the tests references to


class NotPlain(Exception):
    pass


# Bound now, in the trusted worker, before any program runs (a program may rebind module names).
_Fraction, _Decimal = fractions.Fraction, decimal.Decimal
_od_items = collections.OrderedDict.items  # a C method: OrderedDict keeps its own order beside dict's
_USER = ((collections.UserDict, dict), (collections.UserList, list), (collections.UserString, str))
_BASES = (int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset)


def _as_builtin(x):
    """x, an instance of a subclass of a builtin type, as a fresh object of that builtin type,
    read with the builtin's own methods (overrides in the subclass are never called). The class is
    judged by type(x), never by a `__class__` the object may claim."""
    t = type(x)
    if issubclass(t, dict):
        items = _od_items(x) if issubclass(t, collections.OrderedDict) else dict.items(x)
        return dict(items)  # dict() of a view: the builtin iteration, then an exact dict
    if issubclass(t, list):
        return list(list.__iter__(x))
    if issubclass(t, tuple):
        return tuple(tuple.__iter__(x))
    if issubclass(t, frozenset):
        return frozenset(frozenset.__iter__(x))
    if issubclass(t, set):
        return set(set.__iter__(x))
    if issubclass(t, str):
        return str.__str__(x)
    if issubclass(t, int):
        return int.__int__(x)
    if issubclass(t, float):
        return float.__float__(x)
    if issubclass(t, complex):
        return complex(complex.real.__get__(x), complex.imag.__get__(x))
    if issubclass(t, bytearray):
        return bytearray.fromhex(bytearray.hex(x))
    return bytes.fromhex(bytes.hex(x))


def _numpy_scalar(x):
    """A numpy scalar (numpy.int64, numpy.bool_, ...) as its Python scalar; None if x is not one."""
    np = sys.modules.get("numpy")
    generic = getattr(np, "generic", None) if np is not None else None
    if not isinstance(generic, type) or not issubclass(type(x), generic):
        return None
    try:
        value = x.item()
    except Exception:
        return None
    return value if type(value) in (bool, int, float, complex, str, bytes) else None


def enc(x, ref=None):
    """x as JSON-able plain data; a non-plain object becomes ref(x) (a reference) or NotPlain."""
    t = type(x)
    if x is None or t is str or t is bool:
        return x
    if t is int:
        return x if -(2**53) < x < 2**53 else {"I": format(x, "x")}
    if t is float:
        return x if math.isfinite(x) else {"F": repr(x)}
    if t is list:
        return [enc(v, ref) for v in x]
    if t is tuple:
        return {"T": [enc(v, ref) for v in x]}
    if t is dict:
        return {"D": [[enc(k, ref), enc(v, ref)] for k, v in x.items()]}
    if t is set or t is frozenset:
        return {"S" if t is set else "Z": [enc(v, ref) for v in x]}
    if t is bytes or t is bytearray:
        return {"B" if t is bytes else "A": x.hex()}
    if t is complex:
        return {"C": [enc(x.real), enc(x.imag)]}
    if t is range:
        return {"R": [x.start, x.stop, x.step]}
    if t is _Fraction:
        num, den = x.numerator, x.denominator
        if type(num) is int and type(den) is int and den > 0:
            return {"Q": [format(num, "x"), format(den, "x")]}
    elif t is _Decimal:
        return {"M": _Decimal.__str__(x)}
    elif issubclass(t, _BASES):
        return enc(_as_builtin(x), ref)
    else:
        for wrapper, base in _USER:  # UserDict/UserList/UserString compare as the builtin they wrap
            if issubclass(t, wrapper):
                data = x.__dict__.get("data") if type(getattr(x, "__dict__", None)) is dict else None
                if isinstance(data, base):
                    return enc(data, ref)
                break
        else:
            value = _numpy_scalar(x)
            if value is not None:
                return enc(value, ref)
    if ref is not None:
        return {"H": ref(x)}
    raise NotPlain(t.__name__)


def dec(y, ref=None):
    """Plain data back from enc(); a reference becomes ref([id, type name]) (NotPlain without ref)."""
    t = type(y)
    if t is list:
        return [dec(v, ref) for v in y]
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
        return tuple(dec(i, ref) for i in v)
    if tag == "D":
        return {dec(k, ref): dec(i, ref) for k, i in v}
    if tag in "SZ":
        return (set if tag == "S" else frozenset)(dec(i, ref) for i in v)
    if tag in "BA":
        return (bytes if tag == "B" else bytearray).fromhex(v)
    if tag == "C":
        return complex(dec(v[0]), dec(v[1]))
    if tag == "R":
        return range(*[int(i) for i in v])
    if tag == "Q":
        return _Fraction(int(v[0], 16), int(v[1], 16))
    if tag == "M":
        return _Decimal(str(v))
    if tag == "H" and ref is not None:
        return ref(v)
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


def builtin_exception(name, message):
    """The exception the other side reported, rebuilt from its name: a builtin Exception type
    (never one the sender chose to define), else RuntimeError naming it."""
    typ = getattr(builtins, name, None)
    if isinstance(typ, type) and issubclass(typ, Exception):
        return typ(message)
    return RuntimeError(f"{name}: {message}")


def where(exc, filename, lines=None):
    """'line N: <source line>' of the deepest frame in `filename`, for failure reasons."""
    tb, lineno = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    if lineno is None:
        return ""
    text = lines[lineno - 1].strip() if lines and 0 < lineno <= len(lines) else ""
    return f"line {lineno}: {text}"[:300] if text else f"line {lineno}"
