"""Split stills on a production farm with real Blender: one frame rendered in parts by two workers, merged by the
packager, against plain Blender rendering the same frame on one machine at the same total samples. Cycles is split
by samples, with its denoiser off and on; Workbench by bands of rows (outlines and cavity read neighbouring pixels,
which the bands' overscan covers)."""

import io
import json
import math
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.helpers import HTTP, build_blend, check_zip, pixels, plain_blender_frames, submit, wait_for_status

pytestmark = pytest.mark.slow
KINDS = ("noisy", "denoised", "workbench")
SIZES = {"noisy": (64, 48), "denoised": (64, 48), "workbench": (64, 160)}


@pytest.fixture(scope="module")
def stills(prod_settings, tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    return {kind: build_blend(prod_settings, "split_still", folder / f"{kind}.blend", kind) for kind in KINDS}


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio of two 8-bit images of one size and mode, in dB (inf when identical)."""
    (size_a, mode_a, data_a), (size_b, mode_b, data_b) = a, b
    assert (size_a, mode_a) == (size_b, mode_b)
    error = np.mean((np.frombuffer(data_a, np.uint8).astype(float) - np.frombuffer(data_b, np.uint8)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255**2 / error)


def submitted(farm, blend, kind: str, parts: int, *, typed: bool = False) -> dict:
    """Submit one still split in `parts`, through the API or, `typed`, the command line; its JOB."""
    if not typed:
        answer = submit(farm.url, blend, name=f"{kind}-{parts}", frame_start=1, frame_end=1, split=parts)
        assert answer.status_code == 201, answer.text
        return answer.json()["job"]
    argv = ["submit", str(blend), "--frames", "1", "--split", str(parts), "--name", f"{kind}-{parts}", "--json"]
    done = subprocess.run([sys.executable, "-m", "farm", *argv], env=farm.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout[done.stdout.index("{") :])


def test_split_stills_match_one_machines_render(own_farm, prod_settings, stills, tmp_path):
    with ThreadPoolExecutor(4) as pool:  # the workers start, and the jobs are submitted, side by side
        hosts = set(pool.map(lambda name: own_farm.start_worker(name, concurrency=1), ["s1", "s2"]))
        cases = [("noisy", 2), ("noisy", 4), ("denoised", 4), ("workbench", 4)]
        sent = [
            pool.submit(submitted, own_farm, stills[kind], kind, parts, typed=kind == "workbench")
            for kind, parts in cases
        ]
        plain = {kind: plain_blender_frames(prod_settings, stills[kind], tmp_path / kind, 1, 1)[1] for kind in KINDS}
        jobs = dict(zip(cases, [future.result() for future in sent], strict=True))
    assert [job["split"] for job in jobs.values()] == [parts for _, parts in cases]

    renderers, scores = set(), {}
    for (kind, parts), job in jobs.items():
        done = wait_for_status(own_farm.url, job["id"], {"COMPLETED", "FAILED"}, timeout=240)
        assert done["status"] == "COMPLETED", done
        assert done["split"] == parts and done["render"]["frames_rendered"] == 1
        zipped = HTTP.get(done["asset"]["url"], timeout=30).content
        manifest = check_zip(zipped, name=f"{kind}-{parts}", frames=range(1, 2), size=SIZES[kind])
        assert manifest["frames"][0]["device"] == f"{parts} parts merged"
        chunks = HTTP.get(f"{own_farm.url}/api/jobs/{job['id']}/chunks", timeout=10).json()["chunks"]
        assert [c["status"] for c in chunks] == ["DONE"] * parts
        renderers |= {c["worker"] for c in chunks}
        still = pixels(zipfile.ZipFile(io.BytesIO(zipped)).read("0001.png"))
        scores[kind, parts] = psnr(still, plain[kind])
    assert renderers == hosts  # the parts were spread over both workers
    # The math allows identical noisy stills (the parts' samples are the whole's, weighted by their share) and
    # identical bands; denoising the merged passes is OIDN on inputs equal but for float rounding.
    assert scores[("noisy", 2)] >= 60 and scores[("noisy", 4)] >= 60, scores
    assert scores[("workbench", 4)] == math.inf, scores
    assert scores[("denoised", 4)] >= 40, scores
