"""How a split still is cut into parts: runs of samples that cover the frame's sequence exactly once, bands of rows
that cover the frame exactly once with overscan inside it, and the parts' reports kept to known settings."""

import pytest

from farm.jobs import splitting


@pytest.mark.parametrize(("samples", "parts"), [(4, 2), (4, 4), (7, 3), (128, 5), (64, 64), (16384, 64)])
def test_sample_runs_cover_every_sample_once(samples, parts):
    runs = splitting.sample_runs(samples, parts)
    assert len(runs) == parts
    covered = [s for offset, length in runs for s in range(offset, offset + length)]
    assert covered == list(range(samples))
    lengths = [length for _, length in runs]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def test_sample_runs_refuse_more_parts_than_samples():
    with pytest.raises(ValueError):
        splitting.sample_runs(3, 4)


@pytest.mark.parametrize(("height", "parts"), [(36, 2), (36, 4), (37, 3), (1080, 7), (64, 64), (5, 5)])
def test_bands_cover_every_row_once_with_overscan_inside_the_frame(height, parts):
    bands = splitting.bands(height, parts, overscan=8)
    kept = [row for band in bands for row in range(*band.keep)]
    assert kept == list(range(height))
    for band in bands:
        low, high = band.rows
        assert 0 <= low <= band.keep[0] < band.keep[1] <= high <= height
        assert low == max(0, band.keep[0] - 8) and high == min(height, band.keep[1] + 8)


def test_bands_refuse_more_parts_than_rows():
    with pytest.raises(ValueError):
        splitting.bands(4, 5)


def test_part_specs_by_engine():
    cycles = splitting.part_spec(engine="CYCLES", samples=10, size=(64, 36), parts=3, index=2)
    assert cycles == {
        "mode": "samples",
        "index": 2,
        "count": 3,
        "sample_offset": 6,
        "sample_length": 4,
        "samples": 10,
    }
    workbench = splitting.part_spec(engine="BLENDER_WORKBENCH", samples=None, size=(64, 36), parts=2, index=0)
    assert workbench["mode"] == "tiles" and workbench["keep"] == [0, 18] and workbench["height"] == 36
    assert workbench["rows"] == [0, min(36, 18 + splitting.OVERSCAN_ROWS)]


@pytest.mark.parametrize(
    ("engine", "samples", "size", "parts", "refused"),
    [
        ("CYCLES", 4, (64, 36), 4, False),
        ("CYCLES", 3, (64, 36), 4, True),
        ("CYCLES", None, (64, 36), 2, True),
        ("BLENDER_WORKBENCH", None, (64, 36), 36, False),
        ("BLENDER_EEVEE_NEXT", 64, (64, 36), 37, True),
        ("BLENDER_WORKBENCH", None, None, 2, True),
    ],
)
def test_refusal(engine, samples, size, parts, refused):
    why = splitting.refusal(engine=engine, samples=samples, size=size, parts=parts)
    assert bool(why) is refused, why


def test_frame_size_scales_both_sides_as_blender_does():
    assert splitting.frame_size(1920, 1080, 33) == (633, 356)


def test_a_parts_report_keeps_only_known_settings_of_their_own_type():
    raw = {
        "view_transform": "AgX",
        "exposure": 0.5,
        "gamma": True,  # a bool is no number here
        "quality": "90",  # nor a string
        "look": "x" * 65,  # too long
        "denoise": True,
        "path": "/etc/passwd",  # not a setting
    }
    assert splitting.clean_recipe(raw) == {"view_transform": "AgX", "exposure": 0.5, "denoise": True}
    assert splitting.clean_recipe(["not", "a", "dict"]) == {}


def test_part_keys_differ_by_attempt():
    first = splitting.part_key("job", 7, 1, 1, "ab" * 32)
    assert first == "jobs/job/parts/0000007-01-1-abababababababab.exr"
    assert splitting.part_key("job", 7, 1, 2, "ab" * 32) != first
