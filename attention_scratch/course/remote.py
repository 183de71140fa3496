"""The checker's side of a student process: a module-like proxy whose functions run over there.

``RemoteModule`` stands in for the student's chapter file inside the graded
tests. ``ch.scaled_scores(q, k, 0.5)`` pickles the arguments to the student
process, waits for the reply within the exercise's time budget, and returns the
decoded result. Arguments the call changed are brought back into the test's
own objects (so a generator advances, a buffer written in place shows the
writes), and an argument changed that the exercise does not allow to change
fails the test. The student's exceptions come back with the file and line.
"""
import contextlib
import functools
import io
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np

from . import wire


class GradingError(AssertionError):
    """A failure of the student's code that the report shows as it is (no traceback of ours)."""


class StudentTimeout(GradingError):
    """The exercise's time budget ran out while student code was running."""


class StudentDied(GradingError):
    """The student process ended during a call (``os._exit``, a crash, a kill)."""


class StudentRaised(Exception):
    """The student's function raised; ``type_name`` is the exception's class name.

    When that class is a built-in one (``ValueError``, ``TypeError`` ...), the
    error raised here is an instance of it too, so ``pytest.raises(ValueError)``
    in a test sees the student's ``ValueError``.
    """

    def __init__(self, message, type_name):
        super().__init__(message)
        self.type_name = type_name


_RAISED_TYPES = {}


def student_raised(message, type_name):
    """A :class:`StudentRaised` that is also an instance of the built-in exception ``type_name``."""
    builtin = _builtin_exception(type_name)
    if builtin is None or builtin is NotImplementedError or not issubclass(builtin, Exception):
        return StudentRaised(message, type_name)
    kind = _RAISED_TYPES.get(builtin)
    if kind is None:
        kind = type(f"Student{builtin.__name__}", (StudentRaised, builtin), {})
        _RAISED_TYPES[builtin] = kind
    return kind(message, type_name)


class NotStarted(NotImplementedError):
    """The function still raises the stub's ``NotImplementedError("Exercise N.M: ...")``."""


def _builtin_exception(name):
    import builtins

    kind = getattr(builtins, str(name), None)
    return kind if isinstance(kind, type) and issubclass(kind, BaseException) else None


class StudentProcess:
    """One student process for one exercise, with one wall-clock budget for all its calls."""

    def __init__(self, module_path, function_name, *, budget, library="", solutions_dir="",
                 output_path=None, writes=(), signature=None, scratch=None, readable=(),
                 cache_dir=None):
        self.module_path = str(module_path)
        self.function_name = function_name
        self.budget = float(budget)
        self.library = library
        self.solutions_dir = str(solutions_dir or "")
        self.output_path = output_path
        self.writes = set(writes)
        self.signature = signature
        self.scratch = Path(scratch) if scratch else None
        self.readable = [str(p) for p in readable]
        self.cache_dir = cache_dir
        self.sandbox = None  # the Landlock ABI the student process runs under (None: not sandboxed)
        self.deadline = None
        self.process = self.sock = None
        self.broken = None  # the GradingError that ended this exercise, repeated to later calls
        self.copied = None
        self.calls = 0
        self._callbacks = {}

    # -- the process -----------------------------------------------------------------------------

    def start(self):
        self.deadline = time.monotonic() + self.budget
        ours, theirs = socket.socketpair()
        scratch = self.scratch or Path(tempfile.mkdtemp(prefix="student_"))
        scratch.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "attention_scratch.course.student", "--fd",
                   str(theirs.fileno()), "--module", self.module_path, "--function",
                   self.function_name, "--library", self.library, "--solutions", self.solutions_dir,
                   "--cpu-seconds", str(4 * self.budget + 30), "--scratch", str(scratch)]
        for path in self.readable:
            command += ["--allow-read", path]
        env = dict(os.environ, TMPDIR=str(scratch), MPLCONFIGDIR=str(scratch / "matplotlib"),
                   NUMBA_CACHE_DIR=str(self.cache_dir or scratch / "numba"),
                   PYTHONDONTWRITEBYTECODE="1")
        try:
            with (open(self.output_path, "ab") if self.output_path
                  else contextlib.nullcontext(subprocess.DEVNULL)) as stdout:
                self.process = subprocess.Popen(command, pass_fds=[theirs.fileno()],
                                                stdin=subprocess.DEVNULL, stdout=stdout,
                                                stderr=subprocess.STDOUT, start_new_session=True,
                                                cwd=scratch, env=env)
        finally:
            theirs.close()
        self.sock = ours
        header, _ = self._receive()
        if header.get("kind") != "ready":
            raise self._fail(StudentDied("the process running your code did not start"))
        self.sandbox = header.get("sandbox")

    def stop(self):
        """End the process; a later call starts a new one, with a new budget."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None and self.broken is None:
                wire.send(self.sock, {"kind": "exit"})
                self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired, wire.WireClosed):
            pass
        self._kill()
        self.process = None

    def _kill(self):
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fail(self, error):
        self.broken = error
        self._kill()
        return error

    def _output_tail(self, lines=5):
        if not self.output_path or not os.path.exists(self.output_path):
            return ""
        text = Path(self.output_path).read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def _receive(self):
        """One message from the student process, within the budget; a dead or late process fails."""
        remaining = self.deadline - time.monotonic()
        ready = select.select([self.sock], [], [], max(remaining, 0))[0] if remaining > 0 else []
        if not ready:
            raise self._fail(StudentTimeout("your code ran past this exercise's time budget of "
                                            f"{self.budget:g} s and was stopped "
                                            "(an endless loop? a loop over far too "
                                            "many elements?)"))
        try:
            return wire.recv(self.sock)
        except (wire.WireClosed, ConnectionError, OSError, ValueError):
            code = self.process.wait()
            how = (f"was killed by signal {signal.Signals(-code).name}" if code < 0
                   else f"exited with status {code}")
            said = self._output_tail()
            raise self._fail(StudentDied(
                f"the process running your code {how} in the middle of a call "
                "(os._exit, sys.exit in a thread, a crash in compiled code?)"
                + (f"; the last lines it printed:\n{said}" if said else ""))) from None

    # -- calls -----------------------------------------------------------------------------------

    def call(self, target, args, kwargs, harness=None):
        if self.broken is not None:
            raise type(self.broken)(str(self.broken))
        if self.process is None:
            self.start()
        arguments = {"args": list(args), "kwargs": dict(kwargs)}
        blob = self._pickle((target, arguments))
        wire.send(self.sock, {"kind": "call", "harness": harness}, [blob])
        self.calls += 1
        while True:
            header, blobs = self._receive()
            if header.get("kind") == "callback":
                self._answer_callback(header, blobs)
                continue
            break
        if header.get("copied"):
            self.copied = header["copied"]
        self._bring_back(arguments, header.get("changed", []), blobs, check=harness is None)
        self._replay_warnings(header.get("warnings", []))
        if header.get("kind") == "error":
            raise self._error(header)
        if header.get("kind") != "result":
            raise self._fail(StudentDied("the process running your code sent something that "
                                         "is not an answer"))
        return wire.decode(header["value"], blobs, arguments)

    def _pickle(self, payload):
        process = self

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, RemoteFunction):
                    return ("student", obj.name)
                if _is_test_function(obj):
                    key = len(process._callbacks)
                    process._callbacks[key] = obj
                    return ("callback", key)
                return None

        buffer = io.BytesIO()
        Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(payload)
        return buffer.getvalue()

    def _answer_callback(self, header, blobs):
        function = self._callbacks.get(header.get("id"))
        try:
            arguments = wire.decode(header["arguments"], blobs)
            value = function(*arguments["args"], **arguments["kwargs"])
            wire.send(self.sock, {"kind": "callback_result", "ok": True}, [pickle.dumps(value)])
        except Exception as error:
            wire.send(self.sock, {"kind": "callback_result", "ok": False,
                                  "error": f"{type(error).__name__}: {error}"})

    def _name(self, path):
        """The parameter name of a top-level argument (``["args", 0]`` or ``["kwargs", "x"]``)."""
        kind, key = path
        if kind == "kwargs":
            return key
        if self.signature is not None and key < len(self.signature):
            return self.signature[key]
        return f"argument {key + 1}"

    def _bring_back(self, arguments, changed, blobs, check):
        """Decide here, not in the student's process, what a call may change.

        A generator's state always comes back (a test may check how far it
        advanced); an argument the exercise writes into comes back into the
        test's own object; any other array, list or dict that the student's
        process reports changed fails the test, and is never copied back. A
        library object that is not written (a model) is not copied back: what
        its own methods keep on it is its business.
        """
        mutated = []
        for entry in changed:
            path = entry["path"]
            original = wire.lookup(arguments, path)
            name = self._name(path)
            if isinstance(original, np.random.Generator) or (name in self.writes or not check):
                update_in_place(original, wire.decode(entry["value"], blobs))
            elif isinstance(original, (np.ndarray, list, dict)):
                mutated.append(name)
        if mutated:
            listed = ", ".join(f"`{n}`" for n in mutated)
            raise GradingError(f"{self.function_name} changed its argument {listed} in place; "
                               "the caller's data must stay as it was "
                               "(work on a copy, e.g. x = x.copy() or a new array)")

    def _replay_warnings(self, found):
        for item in found:
            where = f" (line {item['line']} of {item['file']})" if item.get("line") else ""
            category = _builtin_exception(item.get("category", ""))
            if category is None or not issubclass(category, Warning):
                category = RuntimeWarning
            warnings.warn(f"{item.get('message', '')}{where}", category, stacklevel=2)

    def _error(self, header):
        message = str(header.get("message", ""))
        type_name = str(header.get("type", "Exception"))
        if type_name == "NotImplementedError" and message.startswith("Exercise "):
            return NotStarted(message)
        where = header.get("where") or []
        lines = [header.get("text") or f"{type_name}: {message}"]
        if header.get("loading"):
            lines.insert(0, f"your file {header.get('file')} could not be loaded:")
        for frame in where:
            lines.append(f"  at line {frame['line']} of {header.get('file')}, "
                         f"in {frame['function']}: {frame['code']}")
        if type_name in ("SystemExit", "KeyboardInterrupt"):
            lines.insert(0, "your code tried to end the program:")
        return student_raised("\n".join(lines), type_name)


def adopt_orphans():
    """Make this process the parent of any process its children leave behind (Linux), so that
    :func:`end_orphans` can end them: a student process that double-forks and calls setsid
    escapes its process group, but not its subreaper."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            pass


def _children():
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


def end_orphans(rounds=20):
    """Kill every remaining child of this process (the orphans adopted above) and reap them."""
    for _ in range(rounds):
        children = _children()
        if not children:
            return
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _is_test_function(obj):
    """A function of the test's own (a lambda, a local function): called back, never sent over."""
    if isinstance(obj, type) or not callable(obj):
        return False
    if isinstance(obj, (types.FunctionType, types.MethodType, functools.partial)):
        module = getattr(obj, "__module__", "") or ""
        library = (module.startswith("attention_scratch")
                   and not module.startswith("attention_scratch.course"))
        return not (module.startswith("numpy") or library)
    return False


def update_in_place(original, new):
    """Copy ``new`` into ``original`` where it can change in place
    (arrays, lists, dicts, objects)."""
    if isinstance(original, np.ndarray):
        if isinstance(new, np.ndarray) and new.shape == original.shape:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                original[...] = new
    elif isinstance(original, np.random.Generator):
        if isinstance(new, np.random.Generator):
            original.bit_generator.state = new.bit_generator.state
    elif isinstance(original, list):
        if isinstance(new, list) and len(new) == len(original):
            for i, (old_item, new_item) in enumerate(zip(original, new, strict=True)):
                if _updatable(old_item, new_item):
                    update_in_place(old_item, new_item)
                else:
                    original[i] = new_item
        elif isinstance(new, list):
            original[:] = new
    elif isinstance(original, dict):
        if isinstance(new, dict):
            for key, value in new.items():
                if key in original and _updatable(original[key], value):
                    update_in_place(original[key], value)
                else:
                    original[key] = value
            for key in [k for k in original if k not in new]:
                del original[key]
    elif hasattr(original, "__dict__") and type(original) is type(new):
        for name, value in vars(new).items():
            old = vars(original).get(name, _MISSING)
            if old is not _MISSING and _updatable(old, value):
                update_in_place(old, value)
            else:
                object.__setattr__(original, name, value)


_MISSING = object()


def _updatable(old, new):
    if isinstance(old, np.ndarray):
        return isinstance(new, np.ndarray) and old.shape == new.shape and old.dtype == new.dtype
    return (type(old) is type(new) and isinstance(old, (list, dict, np.random.Generator))) or \
        (hasattr(old, "__dict__") and type(old) is type(new) and not isinstance(old, type))


class RemoteFunction:
    """A function of the student's file, called over the wire."""

    def __init__(self, owner, name):
        self._owner, self.name = owner, name

    def __call__(self, *args, **kwargs):
        return self._owner.process_for(self.name).call(self.name, args, kwargs)

    def __repr__(self):
        return f"<the student's {self.name}>"


class RemoteModule:
    """The student's chapter file as the graded tests see it.

    ``ch.name(...)`` calls the student's function in the exercise's process;
    ``ch.harness("tests/exercises/harness.py:run", ch.name, ...)`` runs a helper
    of the tests beside the student's code (to compile it with Numba, say).
    """

    def __init__(self, process):
        object.__setattr__(self, "_process", process)

    def process_for(self, name):
        return self._process

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return RemoteFunction(self, name)

    def harness(self, spec, *args, **kwargs):
        return self._process.call(None, args, kwargs, harness=spec)
