"""Graded tests: load the chapter file of the selected target (exercises/ by default)."""
import hashlib
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_loaded = {}


def _target_dir(config):
    target = config.getoption("--target")
    if target in ("exercises", "solutions"):
        return REPO / target
    return Path(target).resolve()


@pytest.fixture(scope="session")
def load_target(request):
    """``load_target("ch01_numpy_toolkit")`` imports that file from the selected target."""
    folder = _target_dir(request.config)

    def load(stem):
        path = folder / f"{stem}.py"
        if path in _loaded:
            return _loaded[path]
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `make exercises` to create it")
        name = f"graded_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[path] = module
        return module

    return load
