"""The wire from the student's process: values survive the trip, nothing on it can run code."""
import socket

import numpy as np
import pytest

from attention_scratch.course import wire
from attention_scratch.kv_cache import KVCache


def round_trip(value, identities=None, arguments=None):
    blobs = []
    tree = wire.encode(value, blobs, identities)
    a, b = socket.socketpair()
    wire.send(a, {"value": tree}, blobs)
    header, received = wire.recv(b)
    return wire.decode(header["value"], received, arguments)


def test_values_keep_their_type_dtype_and_bits():
    value = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float16(1.5),
             "i": np.int64(7), "f64": np.float64(2.5), "sum": np.arange(3.0).sum(),
             "t": (1, 2.5, float("nan"), -np.inf, 3j, None, True, "text", 2 ** 70),
             "l": [np.bool_(True)]}
    back = round_trip(value)
    assert back["x"].dtype == np.float32 and np.array_equal(back["x"], value["x"])
    assert type(back["s"]) is np.float16 and back["s"] == 1.5
    assert type(back["i"]) is np.int64 and type(back["l"][0]) is np.bool_
    assert type(back["f64"]) is np.float64 and back["f64"] == 2.5
    assert type(back["sum"]) is np.float64
    t = back["t"]
    assert t[0] == 1 and t[1] == 2.5 and np.isnan(t[2]) and t[3] == -np.inf and t[4] == 3j
    assert t[5:] == (None, True, "text", 2 ** 70) and isinstance(back["t"], tuple)


def test_a_generator_and_a_library_object_come_back_as_such():
    rng = np.random.default_rng(3)
    rng.random(5)
    cache = KVCache()
    back = round_trip([rng, cache])
    assert back[0].random() == rng.random()
    assert type(back[1]) is KVCache and vars(back[1]).keys() == vars(cache).keys()


def test_an_argument_returned_as_it_is_comes_back_as_the_same_object():
    buf = np.zeros(4)
    arguments = {"args": [buf], "kwargs": {}}
    back = round_trip((buf, buf + 1), identities={id(buf): ["args", 0]}, arguments=arguments)
    assert back[0] is buf and back[1] is not buf


@pytest.mark.parametrize("value,words", [
    ({1, 2}, "a set"), (np.array([object()]), "dtype=object"), (lambda x: x, "a function"),
    ((i for i in range(2)), "a generator"),
])
def test_what_cannot_cross_is_described_not_sent(value, words):
    back = round_trip(value)
    assert isinstance(back, wire.Unsupported) and words in back.description


@pytest.mark.parametrize("tree", [
    {"o": "os:system", "state": {"d": []}},
    {"o": "attention_scratch.bench:subprocess", "state": {"d": []}},
    {"o": "attention_scratch.sdpa:np.ndarray", "state": {"d": []}},
    {"o": "attention_scratch.course.remote:StudentProcess", "state": {"d": []}},
    {"eval": "__import__('os')"},
])
def test_only_library_classes_can_be_made_and_nothing_else_is_understood(tree):
    with pytest.raises(ValueError):
        wire.decode(tree, [])


def test_arrays_are_read_without_pickle():
    blobs = []
    wire.encode(np.arange(3), blobs)
    assert b"\x80" not in blobs[0][:10], "an .npy header, not a pickle"
    with pytest.raises(ValueError):
        wire.decode({"a": 0}, [b"\x80\x04\x95" + b"\0" * 40])
