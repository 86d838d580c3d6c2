"""Blender's own progress lines, read as the untrusted text they are (farm/blender/progress.py). The well-formed
lines are verbatim from Blender 4.5 (the bpy wheel): Cycles on the CPU and EEVEE."""

import threading

import pytest

from farm.blender.progress import CEILING, MAX_LINE, FrameProgress, parse

CYCLES = [
    "Fra:1 Mem:8.20M (Peak 8.25M) | Time:00:00.00 | Mem:0.09M, Peak:0.09M | Scene, ViewLayer | Sample 0/1500",
    "Fra:1 Mem:8.30M (Peak 8.30M) | Time:00:12.45 | Remaining:00:05.76 | Mem:0.17M, Peak:0.17M | Scene, ViewLayer"
    " | Sample 1025/1500",
    "Fra:1 Mem:8.38M (Peak 8.38M) | Time:00:18.13 | Mem:0.17M, Peak:0.17M | Scene, ViewLayer | Sample 1500/1500",
]
EEVEE = "Fra:1 Mem:39.22M (Peak 39.26M) | Time:00:39.91 | Rendering 1 / 8 samples"


def test_cycles_and_eevee_lines_give_the_frame_and_its_share():
    assert [parse(line) for line in CYCLES] == [(1, 0.0), (1, 1025 / 1500), (1, CEILING)]
    assert parse(EEVEE) == (1, 1 / 8)
    assert parse("Fra:7 Mem:1M | Time:00:01.00 | Scene, ViewLayer | Path Tracing Sample 64/128") == (7, 0.5)


@pytest.mark.parametrize(
    "line",
    [
        "Fra:1 Mem:8.30M (Peak 8.39M) | Time:00:00.00 | Scene, ViewLayer | Updating Scene BVH | Building BVH 0%",
        "Fra:1 Mem:1M | Time:00:00.10 | Scene, ViewLayer | Sample 9/8",  # more done than asked: a lie
        "Fra:1 Mem:1M | Time:00:00.10 | Scene, ViewLayer | Sample 1/0",
        "Fra:1 Mem:1M | Time:00:00.10 | Scene, ViewLayer | Sample 1/99999999999",  # past any real sample count
        "print: Fra:1 Mem:1M | Scene, ViewLayer | Sample 4/8",  # not at the start of the line
        "Fra:1 Mem:1M | Scene, ViewLayer | Sample -1/8",
        "Fra:1 Mem:1M " + "| x " * 400 + "| Sample 4/8",  # too many fields
        "Fra:1 Mem:1M | Scene, ViewLayer | Sample 4/8" + " " * MAX_LINE,  # too long to be Blender's
        '{"event": "frame", "frame": 1}',
        "",
    ],
)
def test_anything_else_is_not_progress(line):
    assert parse(line) is None


def test_only_the_frame_the_chunk_waits_for_moves_its_progress():
    progress = FrameProgress([3, 4, 5])
    progress.feed("Fra:4 Mem:1M | Scene, ViewLayer | Sample 6/8")  # another frame's line (a late or forged one)
    assert progress.fraction == 0.0
    progress.feed("Fra:3 Mem:1M | Scene, ViewLayer | Sample 2/8")
    assert progress.fraction == 0.25
    progress.feed("Fra:3 Mem:1M | Scene, ViewLayer | Sample 8/8")
    assert progress.fraction == CEILING  # only the stored image finishes a frame
    progress.frame_done(3)
    assert progress.fraction == 0.0
    progress.feed("Fra:3 Mem:1M | Scene, ViewLayer | Sample 8/8")  # the done frame's late line
    assert progress.fraction == 0.0
    progress.feed("Fra:4 Mem:1M | Scene, ViewLayer | Sample 4/8")
    assert progress.fraction == 0.5
    progress.frame_done(4)
    progress.frame_done(5)
    progress.feed("Fra:5 Mem:1M | Scene, ViewLayer | Sample 4/8")
    assert progress.fraction == 0.0  # nothing left to wait for


def test_a_flood_of_lines_from_another_thread_stays_bounded():
    progress = FrameProgress([1])
    lines = [f"Fra:1 Mem:1M | Scene, ViewLayer | Sample {n}/{m}" for n in range(0, 300) for m in (1, 7, 300)]

    def feed() -> None:
        for line in lines:
            progress.feed(line)

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0.0 <= progress.fraction <= CEILING
