import pytest

from farm.planning import (
    default_chunk_size,
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
    ("frames", "slots", "expected"), [(1, 1, 1), (4, 1, 1), (48, 1, 10), (48, 4, 3), (100_000, 8, 10), (7, 2, 1)]
)
def test_default_chunk_size(frames, slots, expected):
    assert default_chunk_size(frames, slots) == expected


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
    ("left", "avg", "busy", "expected"),
    [(0, None, 0, 0.0), (10, None, 1, None), (10, 1000.0, 1, 10.0), (10, 1000.0, 2, 5.0), (3, 500.0, 0, 1.5)],
)
def test_eta_seconds(left, avg, busy, expected):
    assert eta_seconds(left, avg, busy) == expected
