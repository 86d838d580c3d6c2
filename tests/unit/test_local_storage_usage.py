"""A `file://` farm's storage used and deletes: what `farm.jobs.deletion` and the janitor's measurements rely on."""

from __future__ import annotations

from pathlib import Path

from farm.storage.local import FileStorage


def test_usage_counts_every_file_under_a_prefix_and_delete_prefix_removes_them(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "store")
    storage.ensure_ready()
    storage.put_bytes("jobs/a/frames/0001-x.png", b"p" * 1000)
    storage.put_bytes("jobs/a/logs/chunk-0000-attempt-1.log", b"l" * 10)
    storage.put_bytes("jobs/a/a-0001-0001.zip", b"z" * 300)
    storage.put_bytes("jobs/ab/frames/0001-y.png", b"q" * 7)  # a prefix of the name is another job
    source = tmp_path / "frame.png"
    source.write_bytes(b"h" * 50)
    storage.put_file("jobs/a/frames/0002-y.png", source)  # hard-linked in: still counted in full

    assert storage.usage("jobs/a") == 1000 + 10 + 300 + 50
    assert storage.usage("jobs/ab/") == 7
    assert storage.usage("jobs/none") == 0
    assert storage.abort_uploads("jobs/a") == []  # a folder has no multipart uploads to abandon

    storage.delete_prefix("jobs/a")
    assert storage.usage("jobs/a") == 0 and not (tmp_path / "store/jobs/a").exists()
    assert storage.usage("jobs/ab") == 7 and source.read_bytes() == b"h" * 50
