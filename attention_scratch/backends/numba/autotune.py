"""Tile sizes for the Numba kernels, chosen per machine at first use and cached on disk.

The best ``block_q`` x ``block_k`` depends on the processor (cache sizes, vector width), the
BLAS kernel, the number of threads and the shape. So when a call leaves the tile sizes
at their default, the first call for a new *bucket* (pass, dtype, lengths rounded up to
a power of two, head dims, masked or not, threads) times the kernel on every candidate
of a small grid, :data:`BLOCK_Q` x :data:`BLOCK_K`, and keeps the fastest (:func:`choose`:
within :data:`TIE` of it, the largest tile). The choice,
with every candidate's time, is written to a JSON file in the user's cache folder,
one file per processor model and library version (:func:`cache_path`); later calls and
later processes read it. The file also records a hash of the kernels' source
(:func:`kernels_fingerprint`): choices measured on other kernels or by another grid or rule
(an edited clone, a development version) are dropped and measured again.

* Explicit sizes always win: ``block_q=64`` passed by the caller is run as given (the
  default is :data:`~attention_scratch.contract.AUTO_BLOCK`, an ``int`` equal to 64 that
  the backend can tell apart).
  One size given and one left out: the given one is kept, the other taken from the
  tuned pair.
* Turned off by ``ATTENTION_SCRATCH_AUTOTUNE=0`` or ``autotune=False`` (an argument of
  :func:`attention_scratch.backends.numba.cpu.flash_attention`): the default is then 64 x 64.
* The cache folder is ``$ATTENTION_SCRATCH_CACHE_DIR`` if set, else
  ``$XDG_CACHE_HOME/attention_scratch`` (``~/.cache/attention_scratch``; on Windows
  ``%LOCALAPPDATA%\\attention_scratch``). A cache that cannot be read is ignored, one
  that cannot be written leaves the choice in memory for this process.

The kernel's :class:`~attention_scratch.contract.TilePlan` says what happened:
``requested`` holds ``None`` for a size left to the tuner, ``used`` the sizes run, and
``note`` where they came from.
"""
import datetime
import functools
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from ...contract import AUTO_BLOCK, DEFAULT_BLOCK, DefaultBlock  # noqa: F401  (re-exported)
from .kernel_cache import sources_fingerprint

SWITCH = "ATTENTION_SCRATCH_AUTOTUNE"
CACHE_VARIABLE = "ATTENTION_SCRATCH_CACHE_DIR"
BLOCK_Q = (64, 128, 256, 512)
BLOCK_K = (64, 128, 256, 512)
TIE = 0.03  # candidates this close to the fastest count as tied (see choose)
TUNE_MAX_LEN = 4096  # the tuning run's longest sequence: a bucket above it is timed at this length
TUNE_WORK = 8 * 1024 * 1024  # heads x L x S of the tuning run: about a second for 48 forward calls
TUNE_MAX_HEADS = 8
ROUNDS = 3  # each candidate is timed this many times, interleaved; the best time counts
CONTENDERS = 4  # then the fastest few, those within CONTENDER_RANGE of the fastest,
CONTENDER_RANGE = 0.10  # are timed CONTENDER_ROUNDS more times each, interleaved
CONTENDER_ROUNDS = 4
_memory = {}  # cache path -> its entries, for this process


def enabled(autotune=None):
    """Whether default tile sizes are tuned: ``autotune`` if given, else the environment's
    :data:`SWITCH` (on unless ``0``, ``false``, ``no`` or ``off``)."""
    if autotune is not None:
        return bool(autotune)
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir():
    """The folder of the tuning cache (see the module's docstring)."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "attention_scratch"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attention_scratch"


def cache_path():
    """This machine's cache file: ``numba-tiles-<library version>-<processor model>.json``.

    Every call with default tiles asks for it, so it is worked out once for each value of the
    variables :func:`cache_dir` reads (0.1 ms each time otherwise, a fifth of a call at N = 512).
    """
    return _cache_path(*(os.environ.get(name) for name in _CACHE_DIR_VARIABLES))


_CACHE_DIR_VARIABLES = (CACHE_VARIABLE, "LOCALAPPDATA", "XDG_CACHE_HOME", "HOME", "USERPROFILE")


@functools.lru_cache(maxsize=16)
def _cache_path(*environment):
    slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_model()).strip("-")[:80] or "cpu"
    return cache_dir() / f"numba-tiles-{_version()}-{slug}.json"


def _version():
    """The library's version (the package is loaded whenever one of its modules runs)."""
    return sys.modules[__name__.split(".")[0]].__version__


@functools.cache
def kernels_fingerprint():
    """A short hash of the source files of the kernels the tuner times (forward, backward,
    their tile helpers and exponential) and of the tuner itself (its grid and its rule)."""
    names = ("forward.py", "backward.py", "tiles.py", "exp.py", "autotune.py")
    return sources_fingerprint([Path(__file__).with_name(name) for name in names])[:12]


@functools.cache
def cpu_model():
    """The processor's model name: the cache's key (``/proc/cpuinfo``, else ``platform``), read
    once per process."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _bucket_len(n):
    """A length rounded up to a power of two (at least 64): the lengths that share a choice."""
    return max(64, 1 << max(0, int(n) - 1).bit_length())


def bucket_key(backward, dtype, L, S, E, Ev, masked, threads):
    """The cache key of a call: ``"forward float32 L2048 S2048 E64 Ev64 full t2"``."""
    return (f"{'backward' if backward else 'forward'} {np.dtype(dtype).name} "
            f"L{_bucket_len(L)} S{_bucket_len(S)} E{E} Ev{Ev} {'band' if masked else 'full'} "
            f"t{threads}")


def _read(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ok = (isinstance(data, dict) and data.get("version") == _version()
          and data.get("kernels") == kernels_fingerprint())
    return dict(data.get("entries", {})) if ok else {}


def _write(path, entries):
    """Add ``entries`` to the cache file, atomically (a temporary file renamed over it).

    Entries another process wrote meanwhile are kept. Returns False if the file cannot be
    written.
    """
    data = {"cpu": cpu_model(), "version": _version(), "kernels": kernels_fingerprint(),
            "entries": {**_read(path), **entries}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:
        return False
    return True


def entries():
    """The cached choices of this machine: ``{bucket key: entry}`` (file and memory)."""
    path = cache_path()
    if path not in _memory:
        _memory[path] = _read(path)
    return _memory[path]


def tuning_shape(L, S, heads):
    """``(H, L', S')`` of the tuning run for a call of ``heads`` heads, ``L`` queries, ``S`` keys.

    The lengths are the call's, up to :data:`TUNE_MAX_LEN`, because how often a tile of
    ``K`` and ``V`` must come back from a far cache depends on them; the heads are cut so
    that ``H·L'·S'`` stays near :data:`TUNE_WORK` (at least one head, at most the call's and
    :data:`TUNE_MAX_HEADS`), so the tuning costs about the same for every bucket.
    """
    L, S = min(L, TUNE_MAX_LEN), min(S, TUNE_MAX_LEN)
    H = max(1, min(heads, TUNE_MAX_HEADS, round(TUNE_WORK / max(L * S, 1))))
    return H, L, S


def _tuning_inputs(backward, dtype, L, S, E, Ev, heads, seed=0):
    """Random kernel-layout inputs for the tuning run (:func:`tuning_shape`): ``q`` (H, L', E),
    ``k`` (H, S', E), ``v`` (H, S', Ev) and, for the backward pass, ``d_out`` (H, L', Ev)."""
    rng = np.random.default_rng(seed)
    H, L, S = tuning_shape(L, S, heads)
    q = rng.standard_normal((H, L, E)).astype(dtype)  # (H, L', E)
    k = rng.standard_normal((H, S, E)).astype(dtype)  # (H, S', E)
    v = rng.standard_normal((H, S, Ev)).astype(dtype)  # (H, S', Ev)
    d_out = rng.standard_normal((H, L, Ev)).astype(dtype) if backward else None  # (H, L', Ev)
    return q, k, v, d_out


def _runner(backward, q, k, v, d_out, masked):
    """``run(block_q, block_k)``: one kernel call on the tuning inputs (BLAS already limited)."""
    from .backward import dq_chunks, fused_parallel, pack_operands
    from .forward import forward_parallel
    from .register_tile import pack_columns, pack_heads, row_dots

    L, S = q.shape[1], k.shape[1]
    lo, hi = (-L, 0) if masked else (-L, S)  # a causal mask stands for every band
    scale, one = q.dtype.type(1.0 / np.sqrt(max(q.shape[2], 1))), q.dtype.type(1)
    out = np.empty((*q.shape[:2], v.shape[2]), dtype=q.dtype)  # (H, L', Ev)
    lse = np.empty(q.shape[:2], dtype=q.dtype)  # (H, L')
    if not backward:  # a call packs keys and values, as the library's does
        return lambda bq, bk: forward_parallel(q, pack_heads(k, bk), pack_columns(v), out, lse,
                                               scale, lo, hi, bq, bk)
    forward_parallel(q, pack_heads(k, DEFAULT_BLOCK), pack_columns(v), out, lse, scale, lo, hi,
                     DEFAULT_BLOCK, DEFAULT_BLOCK)
    d = np.empty(q.shape[:2], dtype=q.dtype)  # (H, L'): D = rowsum(dO ∘ O)
    row_dots(d_out, out, d)
    dk, dv = np.empty_like(k), np.empty_like(v)
    q_scaled = q * scale  # (H, L', E)

    def run(bq, bk):
        parts = np.zeros((dq_chunks(k.shape[0], -(-S // bk)), *q.shape), dtype=q.dtype)
        packed = pack_operands(q_scaled, k, v, d_out, bk)  # as the library packs them per call
        fused_parallel(q_scaled, v, d_out, packed, lse, d, dk, dv, parts, one, lo, hi, bq, bk)

    return run


def measure(backward, dtype, L, S, E, Ev, heads, masked, candidates=None, rounds=ROUNDS):
    """Time the kernel on every candidate ``(block_q, block_k)``; returns ``{(bq, bk): seconds}``.

    The candidates take turns in each round (load from elsewhere hits them alike) and the
    best of ``rounds`` counts. Then the :data:`CONTENDERS` fastest, of those within
    :data:`CONTENDER_RANGE` of the fastest, take :data:`CONTENDER_ROUNDS` more turns: on a
    shared machine three rounds leave some percent of noise, enough to crown a tile that is
    slower in every later call (chapter 12). A first call with the default tiles warms the
    kernel up.
    """
    from .threads import blas_one_thread

    candidates = list(candidates or [(bq, bk) for bq in BLOCK_Q for bk in BLOCK_K])
    q, k, v, d_out = _tuning_inputs(backward, dtype, L, S, E, Ev, heads)
    best = dict.fromkeys(candidates, np.inf)
    with blas_one_thread():
        run = _runner(backward, q, k, v, d_out, masked)
        run(DEFAULT_BLOCK, DEFAULT_BLOCK)  # compile or load, warm the caches
        for timed, n_rounds in ((candidates, rounds), (None, CONTENDER_ROUNDS)):
            if timed is None:  # the second stage: the fastest few again
                fastest = min(best.values())
                near = [tile for tile in sorted(best, key=best.get)
                        if best[tile] <= fastest * (1 + CONTENDER_RANGE)]
                timed = near[:CONTENDERS] if len(near) > 1 else []
            for _ in range(n_rounds if timed else 0):
                for bq, bk in timed:
                    start = time.perf_counter()
                    run(bq, bk)
                    best[(bq, bk)] = min(best[(bq, bk)], time.perf_counter() - start)
    return best


def choose(times):
    """The candidate to keep from ``{(bq, bk): seconds}``: of those within :data:`TIE` of the
    fastest, the largest tile (most entries, then most query rows).

    The tuning run is short and has at most :data:`TUNE_MAX_HEADS` heads (one at
    N = 4096), so its times carry a few percent of noise, and a call with more heads than
    threads favours larger tiles: no thread waits for another at the end, and fewer tiles
    mean fewer trips through the loop. Causal, N = 2048, two heads: 128x64 and 256x256
    tied at 10.6 ms in the tuning run; on eight heads 256x256 took 39 ms and 128x64 44 ms
    (best of 9, 2-core AMD EPYC).
    """
    fastest = min(times.values())
    tied = [tile for tile, seconds in times.items() if seconds <= fastest * (1 + TIE)]
    return max(tied, key=lambda tile: (tile[0] * tile[1], tile[0]))


def tuned_blocks(backward, dtype, L, S, E, Ev, heads, masked):
    """``(block_q, block_k, note)`` for this call: from the cache, or measured now and cached."""
    import numba

    threads = numba.get_num_threads()
    key = bucket_key(backward, dtype, L, S, E, Ev, masked, threads)
    known = entries()
    if key not in known:
        times = measure(backward, dtype, L, S, E, Ev, heads, masked)
        bq, bk = choose(times)
        known[key] = {"block_q": bq, "block_k": bk, "seconds": times[(bq, bk)],
                      "candidates": {f"{q}x{k}": t for (q, k), t in times.items()},
                      "tuned_on": dict(zip(("heads", "L", "S"), tuning_shape(L, S, heads),
                                           strict=True)),
                      "date": datetime.datetime.now(datetime.timezone.utc)
                      .isoformat(timespec="seconds")}
        written = _write(cache_path(), known)
        how = f"tuned now, cached in {cache_path()}" if written else "tuned now (cache not written)"
    else:
        how = f"tuned on {known[key].get('date', '?')}, from {cache_path()}"
    entry = known[key]
    return int(entry["block_q"]), int(entry["block_k"]), f"{key}: {how}"


def plan_blocks(args, block_q, block_k, backward=False, autotune=None):
    """The ``(requested, used, note)`` tile sizes of a call to the Numba backend.

    ``block_q`` and ``block_k`` are as the caller passed them; a :class:`DefaultBlock` one
    is left to the tuner (``None`` in ``requested``), any other is used as given.
    """
    auto_q, auto_k = isinstance(block_q, DefaultBlock), isinstance(block_k, DefaultBlock)
    requested = (None if auto_q else int(block_q), None if auto_k else int(block_k))
    if not (auto_q or auto_k):
        return requested, requested, ""
    if not enabled(autotune) or args.L == 0 or args.S == 0 or args.q.size == 0:
        used = (DEFAULT_BLOCK if auto_q else requested[0],
                DEFAULT_BLOCK if auto_k else requested[1])
        return requested, used, "" if enabled(autotune) else "default tiles (autotuning off)"
    lo, hi = args.band
    heads = int(np.prod(args.q.shape[:3]))  # N·Hkv·G
    tuned_q, tuned_k, note = tuned_blocks(backward, args.acc_dtype, args.L, args.S, args.E,
                                          args.Ev, heads, lo > -args.L or hi < args.S)
    used = (tuned_q if auto_q else requested[0], tuned_k if auto_k else requested[1])
    return requested, used, note
