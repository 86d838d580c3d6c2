"""The GPU proof's own rules (bench/gpu/prove.py) on device lists as Cycles reports them on an NVIDIA machine, and
its pixel comparison: what the proof on the lent GPU machine relies on, checked where there is no GPU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.gpu.prove import choice_for, psnr
from farm.blender.devices import Device, NoDevice

CPU = Device("CPU", "CPU", "AMD EPYC (16 threads)")
OPTIX = Device("OPTIX", "OPTIX_0000:01:00", "NVIDIA H100 80GB HBM3")
CUDA = Device("CUDA", "CUDA_0000:01:00", "NVIDIA H100 80GB HBM3")


def test_each_device_asked_for_is_the_one_rendered_on() -> None:
    found = [CUDA, OPTIX, CPU]
    assert choice_for("AUTO", found).label == "OPTIX: NVIDIA H100 80GB HBM3"  # what a worker picks for AUTO
    assert (choice_for("CUDA", found).backend, choice_for("CUDA", found).ids) == ("CUDA", ("CUDA_0000:01:00",))
    assert choice_for("CPU", found).ids == ("CPU",)
    with pytest.raises(NoDevice, match="no OPTIX device"):
        choice_for("OPTIX", [CUDA, CPU])


def test_psnr_is_infinite_for_identical_images_and_low_for_a_black_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    scene = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    noise = rng.normal(0, 4, scene.shape)  # a GPU's frame: the same picture within sampling noise
    for name, pixels in (("cpu", scene), ("gpu", np.clip(scene + noise, 0, 255).astype(np.uint8))):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    Image.fromarray(np.zeros_like(scene)).save(tmp_path / "black.png")
    assert psnr(tmp_path / "cpu.png", tmp_path / "cpu.png") == math.inf
    assert 30 < psnr(tmp_path / "gpu.png", tmp_path / "cpu.png") < 40
    assert psnr(tmp_path / "black.png", tmp_path / "cpu.png") < 10
