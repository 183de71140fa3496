"""The process that runs a student's code: it loads one chapter file and answers calls.

Started by the checker (:mod:`attention_scratch.course.remote`), one per exercise,
in a process session of its own that dies with the checker. It imports the
student's file, then, for each call, runs the function, and sends back the
result, what the call changed in its arguments, the RuntimeWarnings it raised
and, on an exception, the student's own file and line. Nothing it sends is
trusted by the checker (see :mod:`attention_scratch.course.wire`).

It also notices answers that are not the student's: the exercise's function
taken from the library, or anything read from ``solutions/``.
"""
import argparse
import ast
import hashlib
import importlib
import importlib.util
import os
import pickle
import signal
import socket
import sys
import time
import traceback
import types
import warnings
from pathlib import Path

import numpy as np

from . import wire
from .sandbox import restrict

_MAX_WARNINGS = 20
_MAX_MESSAGE_LINES = 12


def _die_with_parent():
    """Ask Linux to kill this process when the checker that started it ends (no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _limit_cpu(seconds):
    """A CPU-time ceiling as a last resort, should the checker's wall clock fail to stop us."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        limit = int(seconds)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _walk(value, visit, into_objects, depth=0):
    """Call ``visit`` on every value inside ``value``
    (lists, tuples, dicts and, if asked, objects)."""
    if depth > wire.MAX_DEPTH:
        return
    visit(value)
    if isinstance(value, (list, tuple)):
        for item in value:
            _walk(item, visit, into_objects, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _walk(item, visit, into_objects, depth + 1)
    elif into_objects and _is_object(value):
        for item in vars(value).values():
            _walk(item, visit, into_objects, depth + 1)


def _is_object(value):
    """An instance of one of the library's classes (a model, a cache):
    walked into, attribute by attribute."""
    return wire.library_object(value)


def _feed(digest, value):
    if isinstance(value, np.ndarray):
        digest.update(f"a{value.dtype.str}{value.shape}".encode())
        if value.size and not value.dtype.hasobject:
            digest.update(np.ascontiguousarray(value).view(np.uint8).tobytes())
    elif isinstance(value, np.random.Generator):
        digest.update(repr(value.bit_generator.state).encode())
    elif isinstance(value, (list, tuple, dict)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        if isinstance(value, dict):
            digest.update(repr(list(value)).encode()[:4096])
    elif _is_object(value):
        digest.update(f"o{id(value)}{sorted(vars(value))}".encode())
    elif isinstance(value, (bool, int, float, complex, str, bytes, type(None), np.generic)):
        digest.update(repr(value).encode()[:256])
    else:
        digest.update(f"{type(value).__name__}{id(value)}".encode())


def fingerprint(value):
    """A hash of everything a call could change in an argument, objects' attributes included."""
    digest = hashlib.blake2b(digest_size=16)
    _walk(value, lambda v: _feed(digest, v), into_objects=True)
    return digest.digest()


def _identities(arguments):
    """{id(obj): path} of every mutable object inside the call's arguments."""
    found = {}

    def walk(value, path, depth):
        if depth > wire.MAX_DEPTH or isinstance(value, (bool, int, float, str, bytes, type(None))):
            return
        found.setdefault(id(value), path)
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, path + [i], depth + 1)
        elif isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
            for key, item in value.items():
                walk(item, path + [key], depth + 1)

    walk(arguments, [], 0)
    return found


class Student:
    """One student chapter file, loaded once, answering calls over a socket."""

    def __init__(self, sock, module_path, exercise_function, library_function, solutions_dir,
                 sandbox=lambda: None):
        self.sock = sock
        self.path = str(Path(module_path).resolve())
        self.function_name = exercise_function
        self.solutions_dir = str(Path(solutions_dir).resolve()) if solutions_dir else None
        self.copied = None
        self.library = self._resolve_library(library_function)
        self.module, self.load_error = None, None
        self._trackers = set()
        self._track_library_function()
        graded_answers = self.solutions_dir and self.path.startswith(self.solutions_dir + os.sep)
        if self.solutions_dir and not graded_answers:
            sys.addaudithook(self._audit)
        self.sandboxed = sandbox()
        self._load()
        self._static_copy_check()

    # -- copying --------------------------------------------------------------------------------

    @staticmethod
    def _resolve_library(spec):
        if not spec:
            return None
        module_name, _, name = spec.partition(":")
        module = importlib.import_module(module_name)
        return module, name, getattr(module, name)

    def _track_library_function(self):
        """Let the library's version of the exercise say when it runs under the student's function
        (called directly, or through a library function that uses it)."""
        if self.library is None or not isinstance(self.library[2], types.FunctionType):
            return
        original, student_file = self.library[2], self.path
        owner = self

        def tracked(*args, **kwargs):
            frame = sys._getframe(1)
            while frame is not None:
                if os.path.realpath(frame.f_code.co_filename) == student_file:
                    owner.copied = f"it runs the library's own {original.__name__}"
                    break
                frame = frame.f_back
            return original(*args, **kwargs)

        self._trackers.add(tracked)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("attention_scratch") and \
                    getattr(module, original.__name__, None) is original:
                setattr(module, original.__name__, tracked)

    def _audit(self, event, args):
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        try:
            path = os.path.realpath(os.fsdecode(args[0]))
        except (TypeError, ValueError):
            return
        if path.startswith(self.solutions_dir + os.sep):
            self.copied = "it reads the reference answers in solutions/"

    def _static_copy_check(self):
        """An ``import`` of the exercise's own function from the library is copying, used or not."""
        try:
            tree = ast.parse(Path(self.path).read_text())
        except (OSError, SyntaxError, ValueError):
            return
        for node in ast.walk(tree):
            from_library = (isinstance(node, ast.ImportFrom)
                            and (node.module or "").startswith("attention_scratch"))
            if from_library and any(alias.name == self.function_name for alias in node.names):
                self.copied = f"it imports {self.function_name} from the library ({node.module})"

    def _check_function_origin(self, function):
        if self.copied:
            return
        if function in self._trackers or function is (self.library[2] if self.library else None):
            self.copied = f"its {self.function_name} is the library's own"
            return
        code = getattr(getattr(function, "py_func", function), "__code__", None)
        if code is None:
            return
        origin = os.path.realpath(code.co_filename)
        package = os.path.realpath(Path(__file__).resolve().parent.parent)
        if origin != self.path and (origin.startswith(package + os.sep)
                                    or (self.solutions_dir
                                        and origin.startswith(self.solutions_dir + os.sep))):
            self.copied = (f"its {self.function_name} is defined in {os.path.basename(origin)}, "
                           "not in your file")

    # -- loading and calling ---------------------------------------------------------------------

    def _load(self):
        name = "student_" + Path(self.path).stem
        try:
            spec = importlib.util.spec_from_file_location(name, self.path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            self.module = module
        except BaseException as error:
            self.load_error = self._describe_error(error, loading=True)

    def _where(self, tb):
        frames = [f for f in traceback.extract_tb(tb) if os.path.realpath(f.filename) == self.path]
        return [{"line": f.lineno, "function": f.name, "code": (f.line or "").strip()}
                for f in frames[-3:]]

    def _describe_error(self, error, loading=False):
        kind = type(error)
        text = traceback.format_exception_only(kind, error)
        message = "".join(text).strip().splitlines()
        if len(message) > _MAX_MESSAGE_LINES:
            message = message[:_MAX_MESSAGE_LINES] + ["..."]
        where = self._where(error.__traceback__)
        if isinstance(error, SyntaxError) and error.lineno and os.path.realpath(error.filename
                                                                                or "") == self.path:
            where = [{"line": error.lineno, "function": "<module>",
                      "code": (error.text or "").strip()}]
        return {"kind": "error", "type": kind.__name__, "builtin": kind.__module__ == "builtins",
                "message": str(error) if not isinstance(error, SyntaxError) else error.msg,
                "text": "\n".join(message), "where": where, "loading": loading,
                "file": os.path.basename(self.path)}

    def _unpickle(self, blob):
        student = self

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                kind, key = pid
                if kind == "student":
                    return student.function(key)
                if kind == "callback":
                    return Callback(student, key)
                raise pickle.UnpicklingError(f"unknown reference {pid!r}")

        import io

        return Unpickler(io.BytesIO(blob)).load()

    def function(self, name):
        if self.module is None:
            raise _LoadFailed()
        if not hasattr(self.module, name):
            raise AttributeError(f"your file does not define a function named {name}")
        function = getattr(self.module, name)
        if name == self.function_name:
            self._check_function_origin(function)
        return function

    def serve(self):
        while True:
            try:
                header, blobs = wire.recv(self.sock)
            except wire.WireClosed:
                return
            if header.get("kind") == "exit":
                return
            if header.get("kind") == "call":
                try:
                    self._answer(header, blobs)
                except Exception as error:
                    wire.send(self.sock, {"kind": "error", "type": "GraderError", "builtin": False,
                                          "message": f"the grader failed on this call: {error!r}",
                                          "text": "", "where": [], "loading": False,
                                          "copied": self.copied,
                                          "file": os.path.basename(self.path)})

    def _answer(self, header, blobs):
        if self.load_error is not None:
            wire.send(self.sock, dict(self.load_error, copied=self.copied))
            return
        try:
            target, arguments = self._unpickle(blobs[0])
            if header.get("harness"):
                function = _load_harness(header["harness"])
            else:
                function = self.function(target)
        except _LoadFailed:
            wire.send(self.sock, dict(self.load_error, copied=self.copied))
            return
        except BaseException as error:
            wire.send(self.sock, dict(self._describe_error(error), copied=self.copied))
            return
        if not callable(function):
            wire.send(self.sock, {"kind": "error", "type": "TypeError", "builtin": True,
                                  "message": f"{target} in your file is {wire.describe(function)}, "
                                             "not a function", "text": "", "where": [],
                                  "loading": False, "copied": self.copied,
                                  "file": os.path.basename(self.path)})
            return
        before = [fingerprint(a) for a in arguments["args"]]
        before_kw = {k: fingerprint(v) for k, v in arguments["kwargs"].items()}
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                value = function(*arguments["args"], **arguments["kwargs"])
                error = None
            except BaseException as raised:
                error = raised
        seconds = time.perf_counter() - start
        found = [self._warning(w) for w in caught if issubclass(w.category, RuntimeWarning)]
        changed, out_blobs = [], []
        identities = _identities(arguments)
        for path, arg, print_before in (
                [(["args", i], a, before[i]) for i, a in enumerate(arguments["args"])]
                + [(["kwargs", k], a, before_kw[k]) for k, a in arguments["kwargs"].items()]):
            if fingerprint(arg) != print_before:
                changed.append({"path": path, "value": wire.encode(arg, out_blobs)})
        if error is not None:
            reply = self._describe_error(error)
        else:
            reply = {"kind": "result", "value": wire.encode(value, out_blobs, identities)}
        reply.update(changed=changed, warnings=found[:_MAX_WARNINGS], seconds=seconds,
                     copied=self.copied)
        wire.send(self.sock, reply, out_blobs)

    def _warning(self, caught):
        line = caught.lineno if os.path.realpath(caught.filename) == self.path else None
        return {"category": caught.category.__name__, "message": str(caught.message), "line": line,
                "file": os.path.basename(self.path)}


class _LoadFailed(Exception):
    pass


class Callback:
    """A function of the test's, passed to student code: each call is answered by the checker."""

    def __init__(self, student, key):
        self.student, self.key = student, key

    def __call__(self, *args, **kwargs):
        blobs = []
        tree = wire.encode({"args": list(args), "kwargs": kwargs}, blobs)
        wire.send(self.student.sock, {"kind": "callback", "id": self.key, "arguments": tree}, blobs)
        header, reply = wire.recv(self.student.sock)
        if header.get("kind") != "callback_result":
            raise RuntimeError("the grader's callback channel broke")
        if not header.get("ok"):
            raise RuntimeError(f"the test's function raised: {header.get('error')}")
        return pickle.loads(reply[0])


def readable_roots(module_path):
    """What the student's code may read: Python, the system, the package, the student's folder.

    Not the repository around the package (solutions/, tests/, the built book).
    """
    package = Path(attention_scratch_dir()).resolve()
    repo = package.parent
    roots = {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev",
             sys.prefix, sys.base_prefix, sys.exec_prefix, str(package),
             str(Path(module_path).resolve().parent)}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = Path(entry).resolve()
        if real == repo or real in repo.parents:
            continue  # the clone itself (PYTHONPATH at a checkout): only its package, above
        roots.add(str(real))
    return sorted(roots)


def attention_scratch_dir():
    import attention_scratch

    return os.path.dirname(attention_scratch.__file__)


def _load_harness(spec):
    """A helper of the tests that must run beside the student's code (compiling it with Numba)."""
    path, _, name = spec.partition(":")
    module_name = "harness_" + Path(path).stem
    module = sys.modules.get(module_name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        loader_spec.loader.exec_module(module)
    return getattr(module, name)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run one student chapter file for the checker.")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--module", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--library", default="")
    parser.add_argument("--solutions", default="")
    parser.add_argument("--cpu-seconds", type=float, default=600)
    parser.add_argument("--scratch", required=True,
                        help="the only folder the student's code may write")
    parser.add_argument("--allow-read", action="append", default=[],
                        help="a file of the tests it may read")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="do not restrict the process (debugging)")
    args = parser.parse_args(argv)
    _die_with_parent()
    _limit_cpu(args.cpu_seconds)
    sock = socket.socket(fileno=args.fd)
    import attention_scratch  # noqa: F401 - the library is loaded before any student code runs

    def sandbox():
        if args.no_sandbox:
            return None
        cache = os.environ.get("NUMBA_CACHE_DIR")
        if cache:
            os.makedirs(cache, exist_ok=True)
        return restrict(read=readable_roots(args.module),
                        write=[args.scratch, "/dev/null", "/dev/shm", *([cache] if cache else [])],
                        read_files=args.allow_read)

    student = Student(sock, args.module, args.function, args.library, args.solutions, sandbox)
    wire.send(sock, {"kind": "ready", "sandbox": student.sandboxed})
    student.serve()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
