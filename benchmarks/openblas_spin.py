"""Do OpenBLAS's spinning workers slow the Numba kernel, or what runs after it, and does the
library's fix help?

Run in a plain process, with no OPENBLAS_* variable set (the point is what a user gets)::

    PYTHONPATH=. python benchmarks/openblas_spin.py --sizes 1024 2048 --repeats 9

**Before the kernel.** For each size and pass, three conditions take turns in every
repetition (so load from elsewhere hits them alike), and only the Numba call is timed:

* ``quiet``: 0.3 s of sleep first, so OpenBLAS's workers are asleep;
* ``after numpy, workers left``: a 1024x1024 NumPy product first, and the kernel run with
  ``ATTENTION_SCRATCH_BLAS_SHUTDOWN=0`` (BLAS held to one thread, as before the fix);
* ``after numpy, workers stopped``: the same product first, then the library's default
  (:func:`attention_scratch.backends.numba.threads.blas_one_thread` stops the workers).

**After the kernel** (``--after``). What the kernel leaves behind is timed instead: the next
call, PyTorch's backward pass of the same size (PyTorch's ``scaled_dot_product_attention``
with autograd, as ``make bench`` times it; skipped without PyTorch), in three conditions:

* ``quiet``: 0.3 s of sleep first;
* ``after the kernel``: right after the Numba backward pass (the library as it is);
* ``after a lifted limit, workers left``: right after the state the kernel used to leave:
  every BLAS held to one thread, every OpenBLAS's workers stopped, then the limits lifted
  (which starts fresh workers) and nothing more.

Prints the median and best of each, and the medians as ratios to ``quiet``.
"""
import argparse
import os
import time

import numpy as np

import attention_scratch as at
from attention_scratch.backends.numba import threads


def report(n, which, times):
    """One line per condition: median, best, median / quiet."""
    quiet = np.median(times["quiet"])
    for name, record in times.items():
        print(f"N={n:<5} {which:<8} {name:<36} median {1e3 * np.median(record):7.1f} ms, "
              f"best {1e3 * min(record):7.1f} ms, median / quiet "
              f"{np.median(record) / quiet:5.2f}", flush=True)


def before_the_kernel(n, q, k, v, g, a, repeats):
    """Time the Numba call after quiet, after a NumPy product with workers left, and with them
    stopped."""
    out, lse = at.flash_attention(q, k, v, backend="numba", return_lse=True)
    calls = {"forward": lambda: at.flash_attention(q, k, v, backend="numba"),
             "backward": lambda: at.flash_attention_backward(g, q, k, v, out, lse, backend="numba")}
    for which, call in calls.items():
        call()  # compile or load, warm
        times = {"quiet": [], "after numpy, workers left": [], "after numpy, workers stopped": []}
        for _ in range(repeats):
            for name, record in times.items():
                if name == "quiet":
                    time.sleep(0.3)
                else:
                    a @ a  # (1024, 1024): OpenBLAS's workers now spin for ~0.1 s
                os.environ["ATTENTION_SCRATCH_BLAS_SHUTDOWN"] = "0" if "left" in name else "1"
                start = time.perf_counter()
                call()
                record.append(time.perf_counter() - start)
        os.environ.pop("ATTENTION_SCRATCH_BLAS_SHUTDOWN")
        report(n, which, times)


def old_exit_state():
    """What ``blas_one_thread`` used to leave: every BLAS held to one thread, every OpenBLAS's
    workers stopped, then the limits lifted."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        threads.stop_idle_blas_workers()
    # lifting the limits (BLAS back to all cores) has started fresh workers, left to spin


def after_the_kernel(n, q, k, v, g, repeats):
    """Time PyTorch's backward pass after quiet, after the Numba backward, and after the old
    exit state."""
    try:
        import torch
    except ImportError:
        print("--after: PyTorch is not installed, skipped")
        return
    out, lse = at.flash_attention(q, k, v, backend="numba", return_lse=True)
    tq, tk, tv = (torch.from_numpy(x).clone().requires_grad_() for x in (q, k, v))
    t_out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
    t_grad = torch.from_numpy(g)

    def torch_backward():
        torch.autograd.grad(t_out, (tq, tk, tv), t_grad, retain_graph=True)

    before = {"quiet": lambda: time.sleep(0.3),
              "after the kernel": lambda: at.flash_attention_backward(g, q, k, v, out, lse,
                                                                      backend="numba"),
              "after a lifted limit, workers left": old_exit_state}
    for first in before.values():
        first()
    torch_backward()  # warm
    times = {name: [] for name in before}
    for _ in range(repeats):
        for name, first in before.items():
            first()
            start = time.perf_counter()
            torch_backward()
            times[name].append(time.perf_counter() - start)
    report(n, "torch backward", times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--after", action="store_true",
                        help="time PyTorch's backward pass run after the kernel instead")
    args = parser.parse_args()
    print("OPENBLAS_* variables:", {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
          or "none")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    for n in args.sizes:
        q, k, v, g = (rng.standard_normal((1, 8, n, 64), dtype=np.float32) for _ in range(4))
        if args.after:
            after_the_kernel(n, q, k, v, g, args.repeats)
        else:
            before_the_kernel(n, q, k, v, g, a, args.repeats)


if __name__ == "__main__":
    main()
