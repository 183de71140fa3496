"""The wire between the checker and the process that runs student code.

Student code runs in a process of its own; the checker, which holds the tests
and decides the grade, never imports it. What comes back from that process is
decoded here without ``pickle``: JSON for the structure and NumPy's ``.npy``
format with ``allow_pickle=False`` for arrays, so nothing it sends can run code
in the checker. What the checker sends the other way (arguments) is pickled:
that direction is trusted.

A message is a JSON header followed by binary blobs, each length-prefixed.
"""
import importlib
import io
import json
import struct

import numpy as np

_LEN = struct.Struct("!Q")
MAX_MESSAGE_BYTES = 1 << 30  # a reply larger than 1 GiB is a bug, not an answer
MAX_DEPTH = 32


class WireClosed(EOFError):
    """The other end closed the connection (the process ended)."""


def _recv_exact(sock, n):
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise WireClosed("the connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send(sock, header, blobs=()):
    """Send a JSON-able ``header`` and a list of ``bytes`` blobs."""
    head = json.dumps(header, allow_nan=True).encode()
    parts = [_LEN.pack(len(head)), head, _LEN.pack(len(blobs))]
    for blob in blobs:
        parts += [_LEN.pack(len(blob)), blob]
    sock.sendall(b"".join(parts))


def recv(sock):
    """Receive one message: ``(header, blobs)``."""
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message header of {n} bytes")
    header = json.loads(_recv_exact(sock, n))
    (count,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    blobs, total = [], 0
    for _ in range(count):
        (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
        total += size
        if total > MAX_MESSAGE_BYTES:
            raise ValueError("a reply larger than 1 GiB")
        blobs.append(_recv_exact(sock, size))
    return header, blobs


def _array_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array) if array.ndim else array, allow_pickle=False)
    return buffer.getvalue()


def _load_array(blob):
    return np.load(io.BytesIO(blob), allow_pickle=False)


def describe(value):
    """A short description of a Python value's type, for messages."""
    kind = type(value)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    return f"a {name}"


class Unsupported:
    """A value the student's code returned that cannot cross the wire
    (a set, a generator, a function ...)."""

    def __init__(self, description):
        self.description = description

    def __repr__(self):
        return f"<{self.description}, which the grader cannot read>"


def library_object(value):
    """An instance of a class of the library (not of the course tools): sent as its attributes."""
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    return (module.startswith("attention_scratch.")
            and not module.startswith("attention_scratch.course")
            and isinstance(getattr(value, "__dict__", None), dict) and not isinstance(value, type))


def encode(value, blobs, identities=None, depth=0):
    """The JSON tree of ``value``; arrays go to ``blobs``.

    ``identities`` maps ``id(obj)`` of the call's arguments to their paths, so that
    an argument returned as it is comes back as that same object.
    """
    scalar = isinstance(value, (bool, int, float, str, type(None)))
    if identities and id(value) in identities and not scalar:
        return {"arg": identities[id(value)]}
    if depth > MAX_DEPTH:
        return {"u": "a structure nested too deep"}
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        if isinstance(value, np.object_):
            return {"u": "a NumPy object scalar"}
        blobs.append(_array_bytes(np.asarray(value)))
        return {"s": len(blobs) - 1}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return {"i": str(int(value))} if abs(value) >= 2 ** 53 else int(value)
    if isinstance(value, float):
        return {"f": float.__repr__(value)}
    if isinstance(value, complex):
        return {"c": [float.__repr__(value.real), float.__repr__(value.imag)]}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return {"u": f"a NumPy array of Python objects (dtype=object, shape {value.shape})"}
        blobs.append(_array_bytes(value))
        return {"a": len(blobs) - 1, "sub": type(value) is not np.ndarray and describe(value)}
    if isinstance(value, np.dtype):
        return {"dt": value.str if value.fields is None else str(value)}
    if isinstance(value, tuple):
        return {"t": [encode(v, blobs, identities, depth + 1) for v in value]}
    if isinstance(value, list):
        return {"l": [encode(v, blobs, identities, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"d": [[encode(k, blobs, identities, depth + 1),
                       encode(v, blobs, identities, depth + 1)] for k, v in value.items()]}
    if isinstance(value, np.random.Generator):
        return {"rng": encode(value.bit_generator.state, blobs, None, depth + 1)}
    if library_object(value):
        kind = type(value)
        return {"o": f"{kind.__module__}:{kind.__qualname__}",
                "state": encode(dict(vars(value)), blobs, identities, depth + 1)}
    return {"u": describe(value)}


def decode(tree, blobs, arguments=None):
    """The value a JSON tree from :func:`encode` stands for. Never runs code of the sender's."""
    if tree is None or isinstance(tree, (bool, int, str)):
        return tree
    if isinstance(tree, float):
        return tree
    if not isinstance(tree, dict) or len(tree) == 0:
        raise ValueError(f"not a value on the wire: {tree!r}"[:200])
    if "arg" in tree:
        if arguments is None:
            raise ValueError("an argument reference outside a call")
        return lookup(arguments, tree["arg"])
    if "i" in tree:
        return int(tree["i"])
    if "f" in tree:
        return float(tree["f"])
    if "c" in tree:
        return complex(float(tree["c"][0]), float(tree["c"][1]))
    if "a" in tree:
        return _load_array(blobs[tree["a"]])
    if "s" in tree:
        return _load_array(blobs[tree["s"]])[()]
    if "dt" in tree:
        return np.dtype(tree["dt"])
    if "t" in tree:
        return tuple(decode(v, blobs, arguments) for v in tree["t"])
    if "l" in tree:
        return [decode(v, blobs, arguments) for v in tree["l"]]
    if "d" in tree:
        return {_hashable(decode(k, blobs, arguments)): decode(v, blobs, arguments)
                for k, v in tree["d"]}
    if "rng" in tree:
        generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = decode(tree["rng"], blobs)
        return generator
    if "o" in tree:
        return _library_object(tree["o"], decode(tree["state"], blobs, arguments))
    if "u" in tree:
        return Unsupported(str(tree["u"]))
    raise ValueError(f"not a value on the wire: {tree!r}"[:200])


def _hashable(key):
    return key.tobytes() if isinstance(key, np.ndarray) else key


def _library_object(qualified, state):
    """An instance of a class defined in the library (never of anything else), with ``state`` as
    attributes. Only ``__new__`` runs: no constructor, no code of the sender's."""
    module_name, _, qualname = qualified.partition(":")
    if (not module_name.startswith("attention_scratch.")
            or module_name.startswith("attention_scratch.course") or not qualname.isidentifier()):
        raise ValueError(f"{qualified} is not a class of the library")
    kind = getattr(importlib.import_module(module_name), qualname, None)
    if (not isinstance(kind, type) or kind.__module__ != module_name
            or kind.__qualname__ != qualname or not isinstance(state, dict)):
        raise ValueError(f"{qualified} is not a class of the library")
    obj = kind.__new__(kind)
    for name, value in state.items():
        if isinstance(name, str):
            object.__setattr__(obj, name, value)
    return obj


def lookup(arguments, path):
    """The object at ``path`` (indices and keys) inside the call's arguments."""
    value = arguments
    for step in path:
        value = value[step]
    return value
