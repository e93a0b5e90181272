"""Atomic writes: an output is the old whole file or the new whole file, never a half-written one."""

from __future__ import annotations

import pandas as pd
import pytest

from segflow.files import atomic_open, atomic_path, read_json, write_csv, write_json, write_text


def test_failed_block_keeps_old_content_and_leaves_no_temp_file(tmp_path):
    dest = tmp_path / "metrics.json"
    dest.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(dest) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed midway")
    assert dest.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failed_atomic_path_keeps_old_content_and_leaves_no_temp_file(tmp_path):
    dest = tmp_path / "model.pt"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed midway")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_failed_first_write_creates_no_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "new.txt") as handle:
        handle.write("x")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_successful_writes_replace_and_create_folders(tmp_path):
    dest = tmp_path / "a" / "b" / "out.json"
    write_json(dest, {"dice": 0.9})
    write_json(dest, {"dice": 0.95})
    assert read_json(dest) == {"dice": 0.95}
    write_text(tmp_path / "note.txt", "hello")
    assert (tmp_path / "note.txt").read_text() == "hello"
    write_csv(tmp_path / "h.csv", pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4]}))
    assert (tmp_path / "h.csv").read_text().splitlines() == ["epoch,loss", "1,0.5", "2,0.4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "h.csv", "note.txt"]
    assert [p.name for p in dest.parent.iterdir()] == ["out.json"]


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    import os

    write_text(tmp_path / "report.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "report.txt").stat().st_mode & 0o777 == 0o666 & ~mask
