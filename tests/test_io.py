"""Atomic writes (loc3r.io): what they leave behind, and with which permissions."""

import os
import stat

import pytest

from loc3r.io import atomic_dir, atomic_path, write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_and_directories_respect_the_umask(tmp_path, umask_022):
    write_json(tmp_path / "metrics.json", {"a": 1})
    with atomic_dir(tmp_path / "ckpt") as d:
        (d / "x.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755
    os.umask(0o077)
    write_json(tmp_path / "private.json", {})
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_a_full_disk_or_a_denied_directory_is_one_line_naming_the_target(tmp_path, monkeypatch):
    import errno

    from loc3r.errors import Loc3rError

    with pytest.raises(Loc3rError, match=r"report.md: cannot write \(no space left on device\)"):
        with atomic_path(tmp_path / "report.md") as tmp:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkdtemp", denied)
    with pytest.raises(Loc3rError, match=r"ckpt: cannot write \(permission denied\)"):
        with atomic_dir(tmp_path / "ckpt"):
            pass
