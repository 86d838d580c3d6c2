"""The preview movie of a real job, rendered by real Blender on a production farm (S3 on moto, Redis, Postgres):
decoded back, it has every frame, even dimensions, the scene's own frame rate, H.264 in yuv420p; OpenEXR frames are
tone-mapped into it; `preview_movie=0` and one-frame jobs get none."""

import io
import zipfile
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from tests.helpers import HTTP, build_blend, submit, wait_for_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def movie_blend(prod_settings, tmp_path_factory):
    """4 frames of a moving cube at 65×37 and 29.97 fps."""
    return build_blend(prod_settings, "movie", tmp_path_factory.mktemp("movie") / "movie.blend")


def decoded(url: str, s3_endpoint: str) -> tuple[av.video.stream.VideoStream, list[np.ndarray], bytes]:
    response = HTTP.get(url, timeout=30)  # redirected to a presigned GET on the S3 server
    assert response.ok and response.url.startswith(s3_endpoint) and "X-Amz-Signature" in response.url
    assert response.headers["Content-Type"] == "video/mp4"
    with av.open(io.BytesIO(response.content)) as movie:
        stream = movie.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in movie.decode(video=0)]
    return stream, frames, response.content


def test_a_jobs_movie_decodes_back_as_the_scene_asks(own_farm, movie_blend, s3_endpoint):
    own_farm.start_worker("movie")
    job_id = submit(own_farm.url, movie_blend, name="mov", chunk_size=2).json()["job"]["id"]
    exr_id = submit(own_farm.url, movie_blend, name="linear", frame_end=2, chunk_size=2, output_format="OPEN_EXR")
    exr_id = exr_id.json()["job"]["id"]
    none_id = submit(own_farm.url, movie_blend, name="nomovie", frame_end=2, chunk_size=2, preview_movie=0)
    none_id = none_id.json()["job"]["id"]
    still_id = submit(own_farm.url, movie_blend, name="still", frame_end=1, chunk_size=1).json()["job"]["id"]

    job = wait_for_status(own_farm.url, job_id, {"COMPLETED", "FAILED"})
    assert job["status"] == "COMPLETED", job
    movie = job["movie"]
    assert movie["filename"] == "mov-0001-0004.mp4" and movie["url"] == f"{own_farm.url}/api/jobs/{job_id}/movie"
    stream, frames, data = decoded(movie["url"], s3_endpoint)
    assert len(data) == movie["size"]
    assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert (stream.width, stream.height) == (66, 38)  # 65×37 padded to even
    assert stream.average_rate == Fraction(30000, 1001)  # the scene's 30 / 1.001, exactly
    assert len(frames) == 4 and all(f.shape == (38, 66, 3) for f in frames)
    # each movie frame is its rendered frame (the cube moves, so they differ); CRF 19 keeps them close
    archive = zipfile.ZipFile(io.BytesIO(HTTP.get(job["asset"]["url"], timeout=30).content))
    for n, frame in enumerate(frames, start=1):
        rendered = np.asarray(Image.open(archive.open(f"{n:04d}.png")).convert("RGB"), dtype=np.int16)
        assert np.abs(frame[:37, :65].astype(np.int16) - rendered).mean() < 6
    assert np.abs(frames[0].astype(np.int16) - frames[3]).mean() > 1

    exr = wait_for_status(own_farm.url, exr_id, {"COMPLETED", "FAILED"})
    assert exr["status"] == "COMPLETED" and exr["movie"]["filename"] == "linear-0001-0002.mp4", exr
    stream, frames, _ = decoded(exr["movie"]["url"], s3_endpoint)
    assert len(frames) == 2 and (stream.width, stream.height) == (66, 38)
    assert 30 < frames[0].mean() < 230  # tone-mapped scene-linear light: neither black nor blown out

    for other in (none_id, still_id):
        done = wait_for_status(own_farm.url, other, {"COMPLETED", "FAILED"})
        assert done["status"] == "COMPLETED" and done["asset"] and done["movie"] is None, done
        answer = HTTP.get(f"{own_farm.url}/api/jobs/{other}/movie", timeout=10)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert job["settings"]["preview_movie"] is True
    assert wait_for_status(own_farm.url, none_id, {"COMPLETED"})["settings"]["preview_movie"] is False
