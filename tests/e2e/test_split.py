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


def test_split_stills_match_one_machines_render(own_farm, prod_settings, stills, tmp_path):
    hosts = {own_farm.start_worker("s1", concurrency=1), own_farm.start_worker("s2", concurrency=1)}
    cases = [("noisy", 2), ("noisy", 4), ("denoised", 2), ("denoised", 4), ("workbench", 4)]
    jobs = {}
    for kind, parts in cases[:-1]:
        answer = submit(own_farm.url, stills[kind], name=f"{kind}-{parts}", frame_start=1, frame_end=1, split=parts)
        assert answer.status_code == 201, answer.text
        jobs[kind, parts] = answer.json()["job"]
    kind, parts = cases[-1]  # the last through the command line
    argv = ["submit", str(stills[kind]), "--frames", "1", "--split", str(parts), "--name", f"{kind}-{parts}", "--json"]
    typed = subprocess.run([sys.executable, "-m", "farm", *argv], env=own_farm.env, capture_output=True, text=True)
    assert typed.returncode == 0, typed.stderr
    jobs[kind, parts] = json.loads(typed.stdout[typed.stdout.index("{") :])
    assert [job["split"] for job in jobs.values()] == [parts for _, parts in cases]
    plain = {kind: plain_blender_frames(prod_settings, stills[kind], tmp_path / kind, 1, 1)[1] for kind in KINDS}

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
    assert all(score >= 40 for score in scores.values()), scores
