"""A strict NumPy stand-in for CuPy, so array-generic code can be tested on a machine without a GPU.

``ndarray`` is a NumPy array whose type claims to live in the module ``cupy``, so
``attention_scratch._checks.array_module`` picks the stand-in module, and which, like
CuPy, refuses to be mixed with plain NumPy arrays in ufuncs and NumPy functions
(``TypeError``). Every function of the stand-in module is NumPy's, with array results
turned into stand-in arrays. It proves nothing about CUDA; it catches code that creates
host arrays (``np.zeros``, ``np.arange``) where the device's module was needed.
"""
import types

import numpy as np


def _is_host(x):
    return type(x) is np.ndarray and x.ndim > 0


def _refuse_host(obj):
    if _is_host(obj):
        raise TypeError("stand-in CuPy: a NumPy array cannot be mixed with a device array "
                        "(CuPy raises TypeError here too); create arrays with the input's module")
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _refuse_host(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            _refuse_host(item)


def _unwrap(obj):
    if isinstance(obj, ndarray):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    if type(obj) is np.ndarray:
        return obj.view(ndarray)
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class ndarray(np.ndarray):
    """A "device" array."""

    def get(self):
        """Copy to the host, as ``cupy.ndarray.get`` does."""
        return np.array(self.view(np.ndarray))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host(inputs)
        _refuse_host(kwargs.get("out", ()))
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types, args, kwargs):
        _refuse_host(args)
        _refuse_host(kwargs)
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __setitem__(self, key, value):
        _refuse_host(value)
        self.view(np.ndarray)[_unwrap(key)] = _unwrap(value)


ndarray.__module__ = "cupy"


class _Module(types.ModuleType):
    """``cupy.<name>`` is NumPy's ``<name>`` returning stand-in arrays (host input is allowed,
    as ``cupy.asarray(numpy_array)`` copies to the device)."""

    def __getattr__(self, name):
        obj = getattr(np, name)
        if callable(obj) and not isinstance(obj, type):
            return lambda *a, **k: _wrap(obj(*_unwrap(a), **_unwrap(k)))
        return obj


def make_module(compute_capability="86", smem_optin=99 * 1024):
    cupy = _Module("cupy")
    cupy.ndarray = ndarray
    cupy.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)

    class Device:
        def __init__(self, index=0):
            self.attributes = {"MaxSharedMemoryPerBlockOptin": smem_optin}
            self.compute_capability = compute_capability

        def synchronize(self):
            pass

    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        get_cuda_path=lambda: None, Device=Device)
    return cupy
