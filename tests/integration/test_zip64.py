"""Packaging a job of more frames than a plain zip can list (65,535 entries): the real packager streams a Zip64
archive into S3 (moto server, a multipart upload), and zipfile reads back every frame and the manifest. Real
Postgres and S3; the 70,000 tiny frames are made directly (the first ones in S3, the rest in the packager's frame
cache, as frames its machine rendered), so the test takes seconds, not the hour 70,000 uploads to moto would."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from pathlib import Path

from sqlalchemy import text, update

from farm.config import Settings
from farm.db import Database
from farm.jobs import states
from farm.models import Job, JobStatus
from farm.storage import open_storage
from tests.rows import make_job
from workers.context import WorkerContext
from workers.frame_cache import FrameCache
from workers.packaging import package_job

FRAMES = 70_000
IN_STORAGE = 50  # frames the packager downloads; the others are copies its machine kept
ZIP64_END = b"PK\x06\x06"  # the Zip64 end of central directory record's signature


def image(frame: int) -> bytes:
    return f"frame {frame}".encode()  # what SQL's 'frame ' || frame makes below


def test_a_job_of_70000_frames_is_packaged_as_a_zip64_archive(
    prod_settings: Settings, database: Database, tmp_path: Path
):
    storage = open_storage(prod_settings)
    storage.ensure_ready()
    ctx = WorkerContext(prod_settings, database, storage, devices=[], frames=FrameCache(tmp_path / "kept", 2**30))
    job_id = make_job(database, FRAMES, chunk_size=1000, name="many")
    with database.session() as session:  # every frame DONE, as 70,000 frame_done calls would leave them
        job = session.get(Job, job_id)
        for index in range(-(-FRAMES // 1000)):  # the rows each chunk's claim would have made
            states.make_frame_rows(session, job, index)
        session.execute(
            text(
                "UPDATE frames SET status = 'DONE', worker = 'w@test', device = 'CPU', render_time_ms = frame, "
                "size = length('frame ' || frame), "
                "sha256 = encode(sha256(convert_to('frame ' || frame, 'UTF8')), 'hex'), "
                "image_key = 'jobs/' || job_id || '/frames/' || frame || '.png' WHERE job_id = :job"
            ),
            {"job": job_id},
        )
        session.execute(update(Job).where(Job.id == job_id).values(frames_rendered=FRAMES, preview_movie=False))
    (tmp_path / "kept").mkdir()
    for frame in range(1, FRAMES + 1):
        data = image(frame)
        if frame <= IN_STORAGE:
            storage.put_bytes(f"jobs/{job_id}/frames/{frame}.png", data, "image/png")
        else:
            (tmp_path / "kept" / hashlib.sha256(data).hexdigest()).write_bytes(data)

    assert package_job(ctx, job_id, actor="test") == "completed"

    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.COMPLETED and job.asset_key
        key, size = job.asset_key, job.asset_size
    blob = storage.read_bytes(key)
    assert len(blob) == size
    end = blob.rindex(b"PK\x05\x06")  # the classic end record: its entry counts overflowed, so they say 0xFFFF
    assert struct.unpack("<HH", blob[end + 8 : end + 12]) == (0xFFFF, 0xFFFF)
    assert blob.rfind(ZIP64_END, 0, end) != -1  # and the Zip64 record holds the real count
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        names = archive.namelist()
        assert len(names) == FRAMES + 1 and names[-1] == "manifest.json"
        assert names[:FRAMES] == [f"{frame:05d}.png" for frame in range(1, FRAMES + 1)]
        assert all(
            archive.read(f"{frame:05d}.png") == image(frame) for frame in (1, IN_STORAGE, IN_STORAGE + 1, FRAMES)
        )
        assert archive.testzip() is None  # every entry's CRC checks out
        manifest = json.loads(archive.read("manifest.json"))
    assert (manifest["job"], manifest["frame_start"], manifest["frame_end"]) == (job_id, 1, FRAMES)
    assert len(manifest["frames"]) == FRAMES
    assert manifest["frames"][-1] == {
        "frame": FRAMES,
        "file": f"{FRAMES:05d}.png",
        "render_time": float(FRAMES),
        "worker": "w@test",
        "device": "CPU",
        "sha256": hashlib.sha256(image(FRAMES)).hexdigest(),
    }
    assert all(f["sha256"] == hashlib.sha256(image(f["frame"])).hexdigest() for f in manifest["frames"])
