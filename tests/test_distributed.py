"""Ring attention and split-KV decoding on real MPI processes equal the single-process kernels.

The MPI tests start ``mpiexec -n R python tests/mpi_ranks.py`` (R = 1, 2, 4; more ranks
than cores is fine) once per R, with a time limit, and check what every rank reported:
its output, lse, dQ, dK and dV against ``at.flash_attention`` /
``at.flash_attention_backward`` on the whole sequence, to 1e-12 in float64. They skip,
saying what to install, where mpi4py or mpiexec is missing; ``make test`` installs both
(requirements-test.txt), so CI runs them. The layout, tiling and import tests need no MPI.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import attention_scratch
from attention_scratch.distributed import LAYOUTS, ring_tiles, shard_positions
from attention_scratch.distributed_mpi import mpiexec_command, run_ranks

RANKS_SCRIPT = Path(__file__).with_name("mpi_ranks.py")
# float64: every rank's shard against the single-process kernels on the whole sequence
EXACT = 1e-12
WORLDS = [1, 2, 4]


def mpi_missing():
    """Why the MPI tests cannot run here, or ``None``."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e '.[mpi]'; make test installs it)"
    try:
        mpiexec_command(1, [])
    except (FileNotFoundError, subprocess.SubprocessError) as error:
        return f"no usable mpiexec: {error}"
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))
_RUNS = {}


def ranks_report(world):
    """What every rank of ``mpiexec -n world python tests/mpi_ranks.py`` reported
    (run once per world)."""
    if world not in _RUNS:  # a failed run is remembered too: the tests after it fail at once
        start = time.perf_counter()
        try:
            done = run_ranks(world, [RANKS_SCRIPT], timeout=300)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or len(lines) != 1:
                _RUNS[world] = (f"mpiexec -n {world} exited {done.returncode}; "
                                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
            else:
                _RUNS[world] = json.loads(lines[0][len("RESULT "):])
        except subprocess.TimeoutExpired as timeout:
            _RUNS[world] = (f"mpiexec -n {world} did not finish in {timeout.timeout} s; "
                            f"it printed:\n{timeout.output}\n{timeout.stderr}")
        print(f"mpiexec -n {world}: {time.perf_counter() - start:.1f} s")
    if isinstance(_RUNS[world], str):
        pytest.fail(_RUNS[world])
    return _RUNS[world]


RING_CASES = ["full contiguous", "full zigzag", "full striped", "causal contiguous",
              "causal zigzag", "causal striped", "causal contiguous blocking",
              "causal zigzag blocking", "full blocking", "causal zigzag GQA scale",
              "causal striped GQA", "causal contiguous long shards",
              "causal zigzag NaN in the last key", "causal contiguous NaN in key 2",
              "causal striped NaN in grad_out row 3"]


@needs_mpi
@pytest.mark.parametrize("world", WORLDS)
def test_the_ranks_run_this_checkout_and_the_report_lists_every_case(world):
    report = ranks_report(world)
    assert len(report) == world
    for r, rank in enumerate(report):
        assert Path(rank["package"]).resolve() == Path(attention_scratch.__file__).resolve(), (
            f"rank {r} imported {rank['package']}, not the package under test")
        assert set(RING_CASES) <= set(rank["ring"]), ("tests/mpi_ranks.py and this file list "
                                                      "different cases")


@needs_mpi
@pytest.mark.parametrize("case", RING_CASES)
@pytest.mark.parametrize("world", WORLDS)
def test_every_rank_equals_single_process_flash_forward_and_backward(world, case):
    for r, rank in enumerate(ranks_report(world)):
        got = rank["ring"][case]
        errors = {name: got[name] for name in ("out", "lse", "dq", "dk", "dv")}
        assert max(errors.values()) <= EXACT, (f"{case} on {world} ranks, rank {r}: "
                                               f"largest |ring - flash| per array {errors} "
                                               f"(allowed {EXACT}; inf means NaN/inf in different "
                                               "places or a wrong shape)")
        assert got["size"] > 0.1, (f"rank {r}: the compared arrays are (nearly) "
                                   f"all zero: {got['size']}")
        assert got["dtype"] == "float64,float64"
        assert got["steps"] == list(range(world)), f"rank {r} computed at steps {got['steps']}"
        assert ("communicate" in got["phases"]) == ("blocking" in case and world > 1), got["phases"]
        assert ("wait" in got["phases"]) == ("blocking" not in case and world > 1), got["phases"]


@needs_mpi
@pytest.mark.parametrize("world", WORLDS)
def test_nan_reaches_exactly_the_rows_that_see_it(world):
    """A NaN key makes NaN the rows that may attend it and no other, as in the single-process kernel
    (the equality test above compares the places of NaN); here: both kinds of row exist."""
    for case in ("causal zigzag NaN in the last key", "causal contiguous NaN in key 2"):
        reports = [rank["ring"][case] for rank in ranks_report(world)]
        nan_rows, rows = sum(r["nan_rows"] for r in reports), sum(r["rows"] for r in reports)
        assert 0 < nan_rows < rows, f"{case}: {nan_rows} of {rows} rows are NaN"
    reports = [rank["ring"]["causal striped NaN in grad_out row 3"] for rank in ranks_report(world)]
    nan_rows = sum(r["nan_gradient_rows"] for r in reports)
    assert sum(r["nan_rows"] for r in reports) == 0 and 0 < nan_rows < 3 * sum(r["rows"]
                                                                               for r in reports)


# case: (dtype, largest difference from single-process flash in that dtype, slack)
LOW_PRECISION = {
    "causal striped float32": ("float32", 2e-6, 1e-7),
    "full contiguous float32": ("float32", 2e-6, 1e-7),
    "causal zigzag float16": ("float16", 4e-3, 1e-4),  # float16 shards accumulate in float32
}


@needs_mpi
@pytest.mark.parametrize("case", sorted(LOW_PRECISION))
@pytest.mark.parametrize("world", WORLDS)
def test_low_precision_is_as_accurate_as_single_process_flash(world, case):
    """docs/design.md §5: the error against float64 is at most 2x that of the single-process
    kernel in the dtype."""
    dtype, close, slack = LOW_PRECISION[case]
    for r, rank in enumerate(ranks_report(world)):
        got = rank["ring"][case]
        assert got["dtype"] == f"{dtype},{dtype}"
        assert max(got[name] for name in ("out", "lse", "dq", "dk", "dv")) < close, got
        assert got["ring_error"] <= 2 * got["flash_error"] + slack, (f"rank {r}: error against "
                                                                     "float64 "
                                                                     f"{got['ring_error']:.3g}, "
                                                                     f"single-process {dtype} "
                                                                     "flash "
                                                                     f"{got['flash_error']:.3g}")


@needs_mpi
@pytest.mark.parametrize("case", ["decode", "decode GQA", "causal L=3", "causal L=12",
                                  "causal L=6 NaN in the last key"])
@pytest.mark.parametrize("world", WORLDS)
def test_split_kv_across_ranks_equals_flash_over_the_whole_cache(world, case):
    reports = [rank["split_kv"][case] for rank in ranks_report(world)]
    for r, got in enumerate(reports):
        assert max(got["out"], got["lse"]) <= EXACT, f"{case} on {world} ranks, rank {r}: {got}"
        assert got["size"] > 0.1
    # 12 new tokens: with fewer keys in the cache, the first rows see none
    if case == "causal L=12":
        assert (reports[0]["empty_rows"] > 0) == (reports[0]["keys"] < 12), reports[0]
    if "NaN" in case:
        assert 0 < reports[0]["nan_rows"] < reports[0]["rows"], reports[0]


ERRORS = {  # case: (type, words in the message, whether it needs two ranks to happen)
    "shard_sizes": ("ValueError", ["every rank must pass the same query shape",
                                   "(1, 2, 5, 3) on rank 0", "(1, 2, 4, 3) on rank 1"], True),
    "not_a_comm": ("TypeError", ["comm must be an mpi4py intracommunicator", "builtins.str"],
                   False),
    "head_dims": ("ValueError", ["same head dim E", "(1, 2, 4, 3) and (1, 2, 4, 2)"], False),
    "flags": ("ValueError", ["every rank must pass the same is_causal", "True on rank 0",
                             "False on rank 1"], True),
    "zigzag_odd": ("ValueError", ["N/R must be even", "(1, 2, 3, 3)"], False),
    "backward_lse": ("ValueError", ["lse must have shape (1, 2, 4)", "got (1, 2, 3)"], False),
    "split_kv_query": ("ValueError", ["every rank must pass the same query shape",
                                      "(1, 2, 2, 3) on rank 0"], True),
    "layout_on_rank_0": ("ValueError", ["layout must be one of", "'ring'"], False),
    # flash_attention's own check, at step 0
    "flag_type": ("TypeError", ["is_causal", "'yes'"], False),
    "overlap_type": ("TypeError", ["overlap must be True or False", "'no'"], False),
    "split_kv_align": ("ValueError", ["causal_align must be 'bottom_right'", "'top_left'"], False),
}


@needs_mpi
@pytest.mark.parametrize("case", sorted(ERRORS))
@pytest.mark.parametrize("world", WORLDS)
def test_a_mistake_on_any_rank_raises_on_every_rank_naming_the_argument(world, case):
    kind, words, needs_two = ERRORS[case]
    for r, rank in enumerate(ranks_report(world)):
        got = rank["errors"][case]
        if needs_two and world == 1:
            assert got is None, f"one rank cannot disagree with itself, yet {case} raised {got}"
            continue
        assert got is not None and got[0] == kind, f"rank {r}, {case}: expected {kind}, got {got}"
        for word in words:
            assert word in got[1], f"rank {r}, {case}: {word!r} not in {got[1]!r}"
        assert rank["errors"]["after"] is None, f"rank {r}: a correct call after the errors failed"


@needs_mpi
def test_a_run_that_hangs_is_killed_with_every_rank_at_the_time_limit(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from mpi4py import MPI
        pid_file = os.path.join({str(tmp_path)!r}, f"pid{{MPI.COMM_WORLD.Get_rank()}}")
        open(pid_file, "w").write(str(os.getpid()))
        print("started", flush=True)
        time.sleep(600)
    """))
    start = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run_ranks(2, [script], timeout=8)
    assert time.perf_counter() - start < 60
    assert "started" in caught.value.output
    pids = [int(p.read_text()) for p in tmp_path.glob("pid*")]
    assert len(pids) == 2
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the rank is gone (reaped by init once mpiexec died)


# ---- no MPI needed -------------------------------------------------------------------------------

def test_shard_positions_are_the_documented_layouts():
    assert shard_positions(8, 2).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert shard_positions(8, 2, "zigzag").tolist() == [[0, 1, 6, 7], [2, 3, 4, 5]]
    assert shard_positions(8, 2, "striped").tolist() == [[0, 2, 4, 6], [1, 3, 5, 7]]
    for layout in LAYOUTS:
        for world in (1, 3, 4):
            positions = shard_positions(24, world, layout)
            assert positions.shape == (world, 24 // world)
            assert sorted(positions.ravel().tolist()) == list(range(24)), (f"{layout} is "
                                                                           "not a permutation")


@pytest.mark.parametrize("args, words", [((10, 4), ["length 10", "multiple of 4"]),
                                         ((12, 4, "zigzag"), ["multiple of 8", "zigzag"]),
                                         ((8, 0), ["world_size", ">= 1"]),
                                         ((8, 2, "ring"), ["layout", "'ring'"]),
                                         ((8.0, 2), ["length", "8.0"])])
def test_shard_positions_rejects_what_cannot_be_sharded(args, words):
    with pytest.raises(ValueError) as caught:
        shard_positions(*args)
    for word in words:
        assert word in str(caught.value)


def tile_coverage(world, n, is_causal, layout):
    """How often each (query, key) pair of the whole sequence is computed,
    over all ranks and steps."""
    positions = shard_positions(world * n, world, layout)
    count = np.zeros((world * n, world * n), dtype=int)  # (N, N)
    for rank in range(world):
        for source in range(world):
            for rows, keys, causal in ring_tiles(rank, source, world, n, is_causal, layout):
                q_pos, k_pos = positions[rank][rows], positions[source][keys]  # (n_q,), (n_k,)
                visible = np.ones((len(q_pos), len(k_pos)), dtype=bool)
                if causal:
                    visible = np.tril(visible)
                count[np.ix_(q_pos, k_pos)] += visible
    return count


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [2, 4, 6])
@pytest.mark.parametrize("is_causal", [False, True])
def test_the_tiles_of_all_ranks_and_steps_cover_the_mask_exactly_once(layout, world, n, is_causal):
    count = tile_coverage(world, n, is_causal, layout)
    N = world * n
    expected = np.tril(np.ones((N, N), dtype=int)) if is_causal else np.ones((N, N), dtype=int)
    assert np.array_equal(count,
                          expected), ("pairs computed twice or missed: "
                                      f"{np.argwhere(count != expected)[:5]}")


def test_zigzag_and_striped_balance_the_causal_work_and_contiguous_does_not():
    world, n = 4, 8

    def work(layout):  # (query, key) pairs each rank computes, over all steps
        def pairs(rows, keys, causal):
            a, b = len(range(n)[rows]), len(range(n)[keys])
            return a * (a + 1) // 2 if causal else a * b  # causal tiles are square
        return [sum(pairs(*tile) for source in range(world)
                    for tile in ring_tiles(r, source, world, n, True, layout))
                for r in range(world)]

    contiguous, zigzag, striped = work("contiguous"), work("zigzag"), work("striped")
    total = (world * n) * (world * n + 1) // 2
    assert sum(contiguous) == sum(zigzag) == sum(striped) == total
    # r full shards, 1 half
    assert contiguous == [r * n * n + n * (n + 1) // 2 for r in range(world)], contiguous
    assert max(zigzag) == min(zigzag), zigzag  # equal
    # one row of n pairs per later rank
    assert max(striped) - min(striped) == (world - 1) * n, striped


def test_the_module_imports_without_mpi4py_and_says_what_to_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["mpi4py"] = None  # as if mpi4py were not installed
        import numpy as np
        from attention_scratch.distributed import ring_attention
        x = np.zeros((1, 1, 2, 2))
        try:
            ring_attention(x, x, x, comm=None)
        except ImportError as error:
            print("ImportError:", error)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ,
                                   PYTHONPATH=str(Path(attention_scratch.__file__).parents[1])))
    assert done.returncode == 0, done.stderr
    assert "ImportError:" in done.stdout, done.stdout
    assert 'pip install "attention_scratch[mpi]"' in done.stdout, done.stdout


def test_ranks_get_this_package_first_on_their_path():
    if mpi_missing():
        pytest.skip(mpi_missing())
    command, env = mpiexec_command(3, ["script.py", "--x"])
    assert command[-3:] == [sys.executable, "script.py", "--x"] and "3" in command
    clone = Path(attention_scratch.__file__).resolve().parents[1]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(clone)
