"""Damaged weight files: one error type, WeightFileError
(a ValueError), naming the file and what is wrong.

Every weight file goes through attention_scratch.optim.load_params (``allow_pickle=False``);
the model loaders add the checks against the model (config, array names, shapes). Before,
these files raised BadZipFile, EOFError, KeyError: 'config' or JSONDecodeError, none
naming the file.
"""
import json
import zipfile

import numpy as np
import pytest

from attention_scratch import optim
from attention_scratch.optim import WeightFileError, load_params, save_params
from attention_scratch.training import seq2seq as train
from attention_scratch.training import transformer as transformer_train

LOADERS = {"seq2seq": (train.load_model, train.DATA_DIR / "bahdanau.npz"),
           "transformer": (transformer_train.load_model, transformer_train.PRETRAINED)}


def shipped(name):
    """The shipped file's arrays and metadata, to damage."""
    with np.load(LOADERS[name][1], allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
        meta = json.loads(str(data["__meta__"]))
    return arrays, meta


def write(path, arrays, meta=None, raw_meta=None):
    extra = {"__meta__": np.array(json.dumps(meta) if raw_meta is None else raw_meta)} \
        if meta is not None or raw_meta is not None else {}
    np.savez(path, **extra, **arrays)
    return path


def check(load, path, *words):
    with pytest.raises(WeightFileError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message, f"the message must name the file: {message}"
    for word in words:
        assert word in message, f"the message must say {word!r}: {message}"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_not_a_weight_file(tmp_path, name):
    load = LOADERS[name][0]
    text = tmp_path / "notes.npz"
    text.write_text("these are not weights\n")
    check(load, text, "not a .npz")
    good = (LOADERS[name][1]).read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    check(load, truncated, "not a .npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    check(load, empty, "not a .npz")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_damaged_member_of_the_zip(tmp_path, name):
    good = tmp_path / "good.npz"
    good.write_bytes(LOADERS[name][1].read_bytes())
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item.filename, data[: len(data) // 3] if item.filename != "__meta__.npy"
                         else data)
    check(LOADERS[name][0], bad, "damaged")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_missing_and_unexpected_arrays(tmp_path, name):
    arrays, meta = shipped(name)
    first = sorted(arrays)[0]
    missing = write(tmp_path / "missing.npz", {k: v for k, v in arrays.items() if k != first}, meta)
    check(LOADERS[name][0], missing, "missing", first)
    extra = write(tmp_path / "extra.npz", dict(arrays, stray=np.zeros(3)), meta)
    check(LOADERS[name][0], extra, "unexpected", "stray")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_wrong_shape(tmp_path, name):
    arrays, meta = shipped(name)
    first = sorted(arrays)[0]
    arrays[first] = arrays[first][..., :1]
    check(LOADERS[name][0], write(tmp_path / "shape.npz", arrays, meta), "shape", first)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_wrong_or_missing_config(tmp_path, name):
    arrays, meta = shipped(name)
    check(LOADERS[name][0], write(tmp_path / "nometa.npz", arrays), "config")
    check(LOADERS[name][0], write(tmp_path / "noconfig.npz", arrays, {"steps": 3}), "config")
    # Config() / d_model % 7
    wrong = {"no_such_option": 1} if name == "seq2seq" else {"num_heads": 7}
    bad = dict(meta, config=dict(meta["config"], **wrong))
    check(LOADERS[name][0], write(tmp_path / "badconfig.npz", arrays, bad), "config")
    check(LOADERS[name][0], write(tmp_path / "badjson.npz", arrays, raw_meta="{not json"),
          "metadata")
    check(LOADERS[name][0], write(tmp_path / "listmeta.npz", arrays, raw_meta="[1, 2]"), "metadata")


def test_pickled_arrays_are_refused_without_running_them(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, __meta__=np.array("{}"), evil=np.array([{"a": 1}], dtype=object))
    check(load_params, path, "pickle")


def test_load_params_is_the_one_function_and_round_trips(tmp_path, rng):
    params = {"W": rng.standard_normal((2, 3)), "b": np.zeros(3)}
    save_params(tmp_path / "w.npz", params, config={"x": 1})
    loaded, meta = load_params(tmp_path / "w.npz")
    assert meta == {"config": {"x": 1}} and sorted(loaded) == ["W", "b"]
    assert optim.WeightFileError is WeightFileError
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz"):
        load_params(tmp_path / "nothing.npz")
