"""The tile autotuner of the Numba backend: cache written and read, switched off, explicit sizes
win.

Tiny shapes, a temporary cache folder and a two-by-two candidate grid; nothing here asserts a
timing.
"""
import json
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

import numba

import attention_scratch as at
from attention_scratch.backends.numba import autotune, cpu


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder, the tuner on, a small candidate grid; returns the cache file path."""
    monkeypatch.setenv(autotune.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.delenv(autotune.SWITCH, raising=False)
    monkeypatch.setattr(autotune, "BLOCK_Q", (8, 16))
    monkeypatch.setattr(autotune, "BLOCK_K", (8, 24))
    monkeypatch.setattr(autotune, "_memory", {})
    return autotune.cache_path()


def inputs(L=40, S=56, E=8, heads=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, heads, L, E)).astype(np.float32),
            rng.standard_normal((1, heads, S, E)).astype(np.float32),
            rng.standard_normal((1, heads, S, E)).astype(np.float32))


def key(backward=False, L=40, S=56, E=8, masked=False):
    return autotune.bucket_key(backward, np.float32, L, S, E, E, masked, numba.get_num_threads())


def write_cache(path, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": "test", "version": at.__version__,
                                "kernels": autotune.kernels_fingerprint(), "entries": entries}))


def no_measuring(*args, **kwargs):
    raise AssertionError("the tuner measured although the cache held the answer")


def test_first_use_measures_every_candidate_and_writes_the_cache(cache):
    q, k, v = inputs()
    assert not cache.exists()
    out = cpu.flash_attention(q, k, v)
    data = json.loads(cache.read_text())
    entry = data["entries"][key()]
    assert data["version"] == at.__version__
    assert data["kernels"] == autotune.kernels_fingerprint()
    assert set(entry["candidates"]) == {"8x8", "8x24", "16x8", "16x24"}
    times = {tuple(map(int, tile.split("x"))): t for tile, t in entry["candidates"].items()}
    assert autotune.choose(times) == (entry["block_q"], entry["block_k"])
    plan = cpu.tile_plan(q, k, v)
    assert plan.requested == (None, None)
    assert plan.used == (entry["block_q"], entry["block_k"])
    np.testing.assert_allclose(out, at.flash_attention(q, k, v), rtol=2e-5, atol=2e-6)


def test_the_fastest_few_are_timed_again(monkeypatch):
    """Every candidate runs ROUNDS times; those within CONTENDER_RANGE of the fastest (at most
    CONTENDERS of them) CONTENDER_ROUNDS more; a lucky first time can only be beaten."""
    seconds = {(8, 8): 1.0, (8, 24): 1.05, (16, 8): 1.09, (16, 24): 2.0}  # pretend times
    runs = []
    clock = {"now": 0.0}

    def fake_runner(backward, q, k, v, d_out, masked):
        def run(bq, bk):
            runs.append((bq, bk))
            clock["now"] += seconds.get((bq, bk), 0.0)
        return run

    monkeypatch.setattr(autotune, "_runner", fake_runner)
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(autotune, "CONTENDERS", 2)
    times = autotune.measure(False, np.float32, 24, 24, 8, 8, 1, False, candidates=list(seconds))
    counts = {tile: runs.count(tile) for tile in seconds}
    first, more = autotune.ROUNDS, autotune.CONTENDER_ROUNDS
    assert counts == {(8, 8): first + more, (8, 24): first + more, (16, 8): first,
                      (16, 24): first}, counts
    assert times == pytest.approx(seconds)


def test_choose_keeps_the_largest_tile_of_those_tied_with_the_fastest():
    tied = 1 + autotune.TIE / 2
    assert autotune.choose({(64, 64): 1.0, (256, 256): 2.0}) == (64, 64)
    assert autotune.choose({(64, 64): 1.0, (256, 256): tied, (128, 512): tied}) == (256, 256)
    assert autotune.choose({(64, 64): 1.0, (128, 256): 1.0, (256, 128): 1.0}) == (256, 128)
    assert autotune.choose({(64, 64): 1.0, (256, 256): 1 + 2 * autotune.TIE}) == (64, 64)
    assert autotune.choose({(32, 32): 5e-6}) == (32, 32)


def test_a_cached_choice_is_read_and_not_measured_again(cache, monkeypatch):
    write_cache(cache, {key(): {"block_q": 16, "block_k": 24},
                        key(masked=True): {"block_q": 16, "block_k": 8},
                        key(backward=True, masked=True): {"block_q": 8, "block_k": 8}})
    monkeypatch.setattr(autotune, "measure", no_measuring)
    q, k, v = inputs()
    assert cpu.tile_plan(q, k, v).used == (16, 24)
    assert cpu.tile_plan(q, k, v, is_causal=True, backward=True).used == (8, 8)
    out, lse = cpu.flash_attention(q, k, v, is_causal=True, return_lse=True)
    grads = cpu.flash_attention_backward(np.ones_like(out), q, k, v, out, lse, is_causal=True)
    want = at.flash_attention_backward(np.ones_like(out), q, k, v, out, lse, is_causal=True)
    for got, ref in zip(grads, want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("field", ["version", "kernels"])
def test_a_cache_of_another_version_or_other_kernels_is_measured_again(cache, field):
    q, k, v = inputs()
    write_cache(cache, {key(): {"block_q": 16, "block_k": 24}})
    assert cpu.tile_plan(q, k, v).note.split(": ")[1].startswith("tuned on")
    data = json.loads(cache.read_text())
    data[field] = "other"
    cache.write_text(json.dumps(data))
    autotune._memory.clear()
    assert cpu.tile_plan(q, k, v).note.split(": ")[1].startswith("tuned now")
    assert json.loads(cache.read_text())[field] == getattr(autotune, {
        "version": "_version", "kernels": "kernels_fingerprint"}[field])()


def test_a_cache_in_another_version_or_unreadable_is_ignored_and_rewritten(cache):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    q, k, v = inputs()
    assert cpu.tile_plan(q, k, v).used in {(8, 8), (8, 24), (16, 8), (16, 24)}
    assert key() in json.loads(cache.read_text())["entries"]
    write_cache(cache, {key(): {"block_q": 16, "block_k": 24}})
    data = json.loads(cache.read_text())
    data["version"] = "0.0.0-other"
    cache.write_text(json.dumps(data))
    autotune._memory.clear()
    assert cpu.tile_plan(q, k, v).note.split(": ")[1].startswith("tuned now")


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_turned_off_runs_the_default_tiles_and_writes_nothing(cache, monkeypatch, how):
    monkeypatch.setattr(autotune, "measure", no_measuring)
    q, k, v = inputs()
    if how == "environment":
        monkeypatch.setenv(autotune.SWITCH, "0")
        plan = cpu.tile_plan(q, k, v)
        out = cpu.flash_attention(q, k, v)
    else:
        plan = cpu.tile_plan(q, k, v, autotune=False)
        out = cpu.flash_attention(q, k, v, autotune=False)
    assert plan.requested == (None, None) and plan.used == (64, 64)
    assert "off" in plan.note
    assert not cache.exists()
    np.testing.assert_allclose(out, at.flash_attention(q, k, v), rtol=2e-5, atol=2e-6)


def test_explicit_sizes_always_win(cache, monkeypatch):
    write_cache(cache, {key(): {"block_q": 16, "block_k": 24}})
    monkeypatch.setattr(autotune, "measure", no_measuring)
    q, k, v = inputs()
    assert cpu.tile_plan(q, k, v, block_q=64, block_k=64) == at.contract.TilePlan((64, 64),
                                                                                  (64, 64))
    assert cpu.tile_plan(q, k, v, block_q=8, block_k=8).used == (8, 8)
    one = cpu.tile_plan(q, k, v, block_q=8)  # the other size comes from the tuned pair
    assert one.requested == (8, None) and one.used == (8, 24)
    assert at.backends.tile_plan(q, k, v, block_q=7, block_k=13, backend="numba").used == (7, 13)


def test_the_public_function_lets_the_numba_backend_tune_and_gives_numpy_the_default(cache,
                                                                                     monkeypatch):
    write_cache(cache, {key(): {"block_q": 16, "block_k": 24}})
    seen = []
    real = cpu.flash_attention

    def spy(*args, **kwargs):
        seen.append(cpu.tile_plan(*args[:3], block_q=kwargs["block_q"],
                                  block_k=kwargs["block_k"]).used)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu, "flash_attention", spy)
    q, k, v = inputs()
    at.flash_attention(q, k, v, backend="numba")
    at.flash_attention(q, k, v, backend="numba", block_q=64, block_k=64)
    assert seen == [(16, 24), (64, 64)]
    assert at.backends.tile_plan(q, k, v).used == (64, 64)  # the NumPy path: the default


@pytest.mark.skipif(sys.platform == "win32", reason="XDG_CACHE_HOME is not read on Windows")
def test_the_cache_file_follows_the_environment_it_is_worked_out_from(tmp_path, monkeypatch):
    """cache_path is worked out once per value of the variables it reads, not once per process."""
    monkeypatch.delenv(autotune.CACHE_VARIABLE, raising=False)
    for name in ("a", "b", "a"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name))
        assert autotune.cache_path().parent == tmp_path / name / "attention_scratch"
    monkeypatch.setenv(autotune.CACHE_VARIABLE, str(tmp_path / "mine"))
    assert autotune.cache_path().parent == tmp_path / "mine"
