"""Numba's cached kernels are dropped when any of their sources changes, not only their own file."""
from pathlib import Path

from attention_scratch.backends.numba import kernel_cache


def _cache_files(folder, names=("forward.forward_parallel-1.py311.nbi",
                                 "forward.forward_parallel-1.py311.1.nbc")):
    for name in names:
        (folder / name).write_bytes(b"compiled")
    (folder / "forward.cpython-311.pyc").write_bytes(b"bytecode")  # not Numba's: kept


def test_cached_kernels_are_dropped_when_a_source_changes_and_kept_while_none_does(tmp_path):
    _cache_files(tmp_path)
    assert kernel_cache.drop_if_stale(tmp_path, "a")  # no stamp yet: nothing is known of them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forward.cpython-311.pyc",
                                                          kernel_cache.STAMP]
    _cache_files(tmp_path)  # compiled again from sources "a"
    assert not kernel_cache.drop_if_stale(tmp_path, "a")
    assert len(list(tmp_path.glob("*.nb[ic]"))) == 2
    assert kernel_cache.drop_if_stale(tmp_path, "b")  # exp.py edited, say
    assert not list(tmp_path.glob("*.nb[ic]"))
    assert (tmp_path / kernel_cache.STAMP).read_text() == "b"


def test_a_missing_folder_is_made_and_stamped(tmp_path):
    folder = tmp_path / "__pycache__"
    assert kernel_cache.drop_if_stale(folder, "a") and not kernel_cache.drop_if_stale(folder, "a")


def test_the_fingerprint_covers_every_file_the_kernels_inline(tmp_path):
    names = {Path(p).name for p in kernel_cache.SOURCES}
    assert {"exp.py", "tiles.py", "register_tile.py", "forward.py", "backward.py", "flex.py",
            "bands.py"} <= names
    files = [tmp_path / "exp.py", tmp_path / "forward.py"]
    for f in files:
        f.write_text("x = 1\n")
    before = kernel_cache.sources_fingerprint(files)
    files[0].write_text("x = 2\n")
    assert kernel_cache.sources_fingerprint(files) != before


def test_the_kernels_folder_is_checked_once_the_kernels_are_imported():
    from attention_scratch.backends.numba import forward  # noqa: F401  (imports .exp first)

    stamp = kernel_cache.HERE / "__pycache__" / kernel_cache.STAMP
    assert stamp.read_text() == kernel_cache.sources_fingerprint()


def test_a_folder_it_may_not_write_is_left_as_it_is(tmp_path, monkeypatch):
    """As in a read-only install (made here by refusing every write: root may write anyway)."""
    _cache_files(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    for name in ("unlink", "write_text", "mkdir"):
        monkeypatch.setattr(Path, name, refuse)
    assert kernel_cache.drop_if_stale(tmp_path, "a")  # no exception
    monkeypatch.undo()
    assert len(list(tmp_path.glob("*.nb[ic]"))) == 2
    assert not (tmp_path / kernel_cache.STAMP).exists()
