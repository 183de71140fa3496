"""The benchmark: FLOP counts, the timer, the correctness check before timing, the table, --gpu."""
import json
import time

import numpy as np
import pytest

from attention_scratch.bench import common
from attention_scratch.bench import cpu as bench


def test_flop_counts_are_those_of_the_flash_attention_papers():
    assert common.attention_flops(1, 8, 2048, 2048, 64) == 4 * 8 * 2048 * 2048 * 64
    assert common.attention_flops(1, 8, 2048, 2048, 64, causal=True) == 2 * 8 * 2048 * 2048 * 64
    assert common.attention_flops(2, 1, 10, 20, 4, backward=True) == 2.5 * 4 * 2 * 10 * 20 * 4


def test_the_timer_counts_work_left_queued_until_the_synchronisation():
    """A fake device: each call queues 2 ms of work and returns at once; sync() does the work."""
    queue = []
    per_call = common.seconds(lambda: queue.append(0.002),
                              lambda: (time.sleep(sum(queue)), queue.clear()), calls=5)
    assert 0.002 <= per_call < 0.02
    # without sync() the work is not seen
    assert common.seconds(lambda: queue.append(0.002)) < 0.002
    assert common.relative_error((np.ones(3), np.zeros(2)), (np.full(3, 2.0), np.ones(2))) == 1.0


def test_a_small_run_checks_times_and_reports_every_method(tmp_path):
    data = bench.run(sizes=(64,), repeats=2, heads=2, budget_s=1.0, log=lambda line: None)
    methods = {r["method"] for r in data["results"]}
    assert methods | set(data["skipped"]) == set(bench.METHODS)
    assert len(data["results"]) == 4 * len(methods)  # (forward, backward) x (plain, causal)
    for row in data["results"]:
        assert row["error"] <= 1e-3 and row["best_ms"] <= row["median_ms"] and row["gflops"] > 0
        assert "vs_torch" in row or "torch sdpa" in data["skipped"]
        assert bench.format_row(row).split()[0] == "64"
    bench.plot(data, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    json.dumps(data)  # what --out stores


def test_each_repetition_starts_one_method_later_so_no_method_always_follows_the_same_one():
    runs = {"a": 1, "b": 2, "c": 3}
    orders = [[name for name, _ in bench.turn_order(runs, rep)] for rep in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    followers = {(order[i - 1], order[i]) for order in orders[:3] for i in range(1, 3)}
    assert {("a", "b"), ("c", "a")} <= followers  # "a" follows "c" in some repetition
    assert bench.turn_order({}, 3) == []


def test_a_wrong_result_is_caught_before_timing(monkeypatch):
    real = bench.Method.forward

    def wrong(self, causal):
        out = real(self, causal)
        return out * 1.01 if self.name == "flash numpy" else out

    monkeypatch.setattr(bench.Method, "forward", wrong)
    with pytest.raises(AssertionError, match=r"flash numpy .* is wrong"):
        bench.run(sizes=(32,), repeats=1, heads=1, methods=("flash numpy",), passes=("forward",),
                  log=lambda line: None)


def test_gpu_switch_without_bench_gpu_says_what_is_needed(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bench_gpu(name, globals=None, locals=None, fromlist=(), level=0):
        package = (globals or {}).get("__package__")
        if fromlist and "gpu" in fromlist and package == "attention_scratch.bench":
            raise ImportError("No module named 'attention_scratch.bench.gpu'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_bench_gpu)
    assert bench.main(["--gpu"]) == 0
    assert "CuPy and a CUDA GPU" in capsys.readouterr().out


def test_command_line_shows_progress_on_stderr_and_ends_with_the_results_line(tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(bench, "measure_sgemm", lambda: 100.0)  # the real one takes seconds
    out = tmp_path / "bench.json"
    assert bench.main(["--sizes", "32", "--repeats", "1", "--heads", "1", "--methods",
                       "flash numpy", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[-1] == f"results: {out}; figure: {out.with_suffix('.png')}"
    assert bench.HEADER in lines and sum(line.split()[:1] == ["32"]
                                         for line in lines) == 4, captured.out
    # the bar counts the four cases (plain and causal, forward and backward) and names
    # the one running
    assert "4/4" in captured.err and "N=32 causal backward" in captured.err, captured.err
    assert "results:" not in captured.err and "4/4" not in captured.out
    assert json.loads(out.read_text())["results"]


def test_run_without_progress_writes_nothing_to_stderr(capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure_sgemm", lambda: 100.0)
    bench.run(sizes=(32,), repeats=1, heads=1, methods=("flash numpy",), passes=("forward",),
              causal=(False,), log=lambda line: None)
    assert capsys.readouterr().err == ""
