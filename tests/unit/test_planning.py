import pytest

from farm.jobs.planning import (
    adaptive_chunks,
    eta_seconds,
    frame_filename,
    parse_frame_range,
    plan_chunks,
    safe_name,
    zip_filename,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1-48", (1, 48)), ("7", (7, 7)), (" 0 - 3 ", (0, 3)), ("10-10", (10, 10)), ("0-99999", (0, 99999))],
)
def test_parse_frame_range_accepts(text, expected):
    assert parse_frame_range(text) == expected


@pytest.mark.parametrize("text", ["", "a-b", "5-1", "-3", "1-", "1.5-3", "1,2", "1--3"])
def test_parse_frame_range_rejects(text):
    with pytest.raises(ValueError):
        parse_frame_range(text)


@pytest.mark.parametrize(
    ("start", "end", "size", "expected"),
    [
        (1, 10, 4, [(1, 4), (5, 8), (9, 10)]),
        (0, 3, 4, [(0, 3)]),
        (5, 5, 1, [(5, 5)]),
        (1, 3, 1, [(1, 1), (2, 2), (3, 3)]),
        (1, 3, 100, [(1, 3)]),
    ],
)
def test_plan_chunks_covers_range_exactly_once(start, end, size, expected):
    chunks = plan_chunks(start, end, size)
    assert chunks == expected
    assert [f for s, e in chunks for f in range(s, e + 1)] == list(range(start, end + 1))


@pytest.mark.parametrize(("start", "end", "size"), [(1, 3, 0), (5, 1, 2)])
def test_plan_chunks_rejects_bad_input(start, end, size):
    with pytest.raises(ValueError):
        plan_chunks(start, end, size)


@pytest.mark.parametrize(
    ("start", "end", "frame_s", "slots", "target", "sizes"),
    [
        (1, 48, 0.16, 1, 60, [48]),  # fast frames, one slot: one chunk, nothing to balance
        (1, 48, 0.16, 2, 60, [24, 12, 6, 3, 2, 1]),  # guided: each chunk at most a half of what is left
        (1, 10, 30.0, 1, 60, [2, 2, 2, 2, 2]),  # 30 s frames, 60 s target: two per chunk
        (1, 5, 120.0, 4, 60, [1, 1, 1, 1, 1]),  # a frame longer than the target: one per chunk
        (0, 999, 1.0, 2, 60, [60] * 15 + [50, 25, 13, 6, 3, 2, 1]),  # capped at the target, shrinking at the tail
        (7, 7, 0.5, 8, 60, [1]),
        (1, 4, 0.0, 2, 60, [2, 1, 1]),  # an instant frame must not divide by zero
    ],
)
def test_adaptive_chunks_last_about_the_target_and_shrink_at_the_tail(start, end, frame_s, slots, target, sizes):
    chunks = adaptive_chunks(start, end, frame_seconds=frame_s, slots=slots, target_seconds=target, max_chunks=100)
    assert [e - s + 1 for s, e in chunks] == sizes
    assert [f for s, e in chunks for f in range(s, e + 1)] == list(range(start, end + 1))


@pytest.mark.parametrize(("end", "max_chunks", "sizes"), [(1000, 100, [10] * 100), (10, 3, [4, 4, 2]), (5, 5, [1] * 5)])
def test_adaptive_chunks_are_never_more_than_max_chunks(end, max_chunks, sizes):
    chunks = adaptive_chunks(1, end, frame_seconds=120.0, slots=2, target_seconds=60, max_chunks=max_chunks)
    assert [e - s + 1 for s, e in chunks] == sizes
    assert [f for s, e in chunks for f in range(s, e + 1)] == list(range(1, end + 1))


def test_adaptive_chunks_rejects_a_reversed_range():
    with pytest.raises(ValueError):
        adaptive_chunks(5, 1, frame_seconds=1.0, slots=1, target_seconds=60, max_chunks=10)


@pytest.mark.parametrize(
    ("frame", "ext", "last", "expected"),
    [
        (7, "png", 48, "0007.png"),
        (0, "exr", 3, "0000.exr"),
        (12345, "jpg", 12345, "12345.jpg"),
        (3, "png", 100000, "000003.png"),
    ],
)
def test_frame_filename_widens_only_when_needed(frame, ext, last, expected):
    assert frame_filename(frame, ext, last) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cubes", "cubes-0000-0003.zip"),
        ("a/b\\c", "a_b_c-0000-0003.zip"),
        ("..", "render-0000-0003.zip"),
        ('x:"y"', "x__y_-0000-0003.zip"),
    ],
)
def test_zip_filename_is_a_safe_file_name(name, expected):
    assert zip_filename(name, 0, 3) == expected


def test_safe_name_strips_control_characters():
    assert safe_name("a\x00b\nc") == "a_b_c"


@pytest.mark.parametrize(
    ("queued", "in_flight", "avg", "expected"),
    [
        (0, [], None, 0.0),  # nothing left
        (10, [], None, None),  # no pace known yet
        (10, [], 1000.0, 10.0),  # nothing rendering: one slot at the average
        (8, [(2, 1000.0), (2, 1000.0)], 1000.0, 6.0),  # 12 frames over two equal slots
        (0, [(1, 1000.0), (5, 250.0)], 1000.0, 1.2),  # the fast worker (4 frames/s) takes the larger share
        (0, [(0.5, 1000.0), (0, 250.0)], 1000.0, 0.5),  # half a frame left on the slow worker: it decides
        (3, [(1.5, None)], 500.0, 2.2),  # a worker with no frame of the job yet goes at the job's average
        (0, [(4, 1000.0)], 1000.0, 4.0),  # a chunk is not shared: its own worker finishes it
    ],
)
def test_eta_seconds(queued, in_flight, avg, expected):
    assert eta_seconds(queued, in_flight, avg) == expected
