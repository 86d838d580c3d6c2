"""The movie's pure pieces: the frame rate the file asks for (held to sane values), tone-mapping OpenEXR's
scene-linear floats, and encoding pictures of odd size into H.264 that decodes back as asked."""

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from farm.jobs.planning import movie_filename
from farm.storage.previews import tone_map
from workers.movie import encode, movie_fps


@pytest.mark.parametrize(
    ("scene", "expected"),
    [
        ({"fps": 24.0}, Fraction(24)),
        ({"fps": 30 / 1.001}, Fraction(30000, 1001)),
        ({"fps": 30 / 1.00100004673}, Fraction(30000, 1001)),  # fps_base 1.001 as Blender's float32 keeps it
        ({"fps": 24 / 1.00100004673}, Fraction(24000, 1001)),
        ({"fps": 12.5}, Fraction(25, 2)),
        ({"fps": 25}, Fraction(25)),
        ({}, Fraction(24)),
        ({"fps": 0.0}, Fraction(24)),
        ({"fps": float("nan")}, Fraction(24)),
        ({"fps": 1e9}, Fraction(24)),
        ({"fps": "60"}, Fraction(24)),
        ({"fps": True}, Fraction(24)),
    ],
)
def test_movie_fps(scene, expected):
    assert movie_fps(scene) == expected


def test_movie_filename_follows_the_zip():
    assert movie_filename("a/b", 1, 48) == "a_b-0001-0048.mp4"


def test_tone_map_rolls_off_highlights_and_ignores_nan():
    linear = np.array([[[0.0, 0.18, 1.0], [4.0, 100.0, -1.0], [np.nan, np.inf, 0.001]]], dtype=np.float32)
    out = tone_map(linear)
    assert out.dtype == np.uint8 and out.shape == linear.shape
    assert out[0, 0, 0] == 0 and 0 < out[0, 0, 1] < out[0, 0, 2] < out[0, 1, 0] == 255
    assert out[0, 1, 1] == 255 and out[0, 1, 2] == 0 and out[0, 2, 0] == 0 and out[0, 2, 1] == 255


def test_encode_pads_odd_frames_and_keeps_the_rate(tmp_path):
    pictures = [Image.new("RGB", (65, 37), (40 * i, 200, 255 - 40 * i)) for i in range(5)]
    dest = tmp_path / "m.mp4"
    assert encode(iter(pictures), Fraction(30000, 1001), dest) == 5
    with av.open(str(dest)) as movie:
        stream = movie.streams.video[0]
        decoded = list(movie.decode(video=0))
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (66, 38) and stream.average_rate == Fraction(30000, 1001)
    assert len(decoded) == 5
    first, last = decoded[0].to_ndarray(format="rgb24"), decoded[-1].to_ndarray(format="rgb24")
    assert abs(int(first[18, 30, 0]) - 0) < 12 and abs(int(last[18, 30, 0]) - 160) < 12  # CRF 19: close to the frame
    luma = decoded[0].to_ndarray(format="gray")  # 4:2:0 shares chroma with the edge, so judge brightness only
    assert luma[:, 65].max() < 40 and luma[37, :].max() < 40 < luma[:37, 64].min()  # padded with black
