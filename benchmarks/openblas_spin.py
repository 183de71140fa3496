"""Does a NumPy product just before the Numba kernel slow it, and does the library's fix help?

Run in a plain process, with no OPENBLAS_* variable set (the point is what a user gets)::

    PYTHONPATH=. python benchmarks/openblas_spin.py --sizes 1024 2048 --repeats 9

For each size and pass, three conditions take turns in every repetition (so load from
elsewhere hits them alike), and only the Numba call is timed:

* ``quiet``: 0.3 s of sleep first, so OpenBLAS's workers are asleep;
* ``after numpy, workers left``: a 1024x1024 NumPy product first, and the kernel run with
  ``ATTENTION_SCRATCH_BLAS_SHUTDOWN=0`` (BLAS held to one thread, as before the fix);
* ``after numpy, workers stopped``: the same product first, then the library's default
  (:func:`attention_scratch.backends.numba.threads.blas_one_thread` stops the workers).

Prints the median and best of each, and the medians as ratios to ``quiet``.
"""
import argparse
import os
import time

import numpy as np

import attention_scratch as at


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print("OPENBLAS_* variables:", {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
          or "none")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    for n in args.sizes:
        q, k, v, g = (rng.standard_normal((1, 8, n, 64), dtype=np.float32) for _ in range(4))
        out, lse = at.flash_attention(q, k, v, backend="numba", return_lse=True)
        calls = {"forward": lambda q=q, k=k, v=v: at.flash_attention(q, k, v, backend="numba"),
                 "backward": lambda q=q, k=k, v=v, g=g, out=out, lse=lse:
                 at.flash_attention_backward(g, q, k, v, out, lse, backend="numba")}
        for which, call in calls.items():
            call()  # compile or load, warm
            times = {"quiet": [], "after numpy, workers left": [],
                     "after numpy, workers stopped": []}
            for _ in range(args.repeats):
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
            quiet = np.median(times["quiet"])
            for name, record in times.items():
                print(f"N={n:<5} {which:<8} {name:<29} median {1e3 * np.median(record):7.1f} ms, "
                      f"best {1e3 * min(record):7.1f} ms, median / quiet "
                      f"{np.median(record) / quiet:5.2f}")


if __name__ == "__main__":
    main()
