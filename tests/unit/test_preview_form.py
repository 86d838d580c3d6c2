"""The form fields of issue 20: `preview` (a quick job: quarter size, few samples, a frame per chunk) and
`preview_movie` (on unless `0`), and the preview queue each worker serves first."""

import pytest

from farm.blender import devices
from farm.config import load_settings
from farm.errors import ValidationError
from farm.jobs.submission import PREVIEW_SAMPLES, parse_form
from farm.messaging.dispatch import broker_priority

SETTINGS = load_settings({"FARM_INSTANCE_DIR": "/tmp/farm-unit-preview"}, dotenv_path=None)


def test_a_preview_is_a_quarter_size_with_few_samples_and_a_frame_per_chunk():
    form = parse_form({"preview": "1"}, SETTINGS)
    assert form.preview and form.resolution_percentage == 25 and form.chunk_size == 1 and form.samples is None
    form = parse_form({"preview": "1", "samples": "4096", "resolution_percentage": "10", "chunk_size": "3"}, SETTINGS)
    assert (form.samples, form.resolution_percentage, form.chunk_size) == (PREVIEW_SAMPLES, 10, 3)
    assert parse_form({"preview": "1", "samples": "8"}, SETTINGS).samples == 8
    full = parse_form({"samples": "4096"}, SETTINGS)
    assert not full.preview and full.samples == 4096 and full.resolution_percentage is None


@pytest.mark.parametrize(("raw", "wanted"), [("", True), ("1", True), ("0", False), ("no", False), ("on", True)])
def test_preview_movie_is_on_unless_turned_off(raw, wanted):
    assert parse_form({"preview_movie": raw}, SETTINGS).preview_movie is wanted


@pytest.mark.parametrize("field", ["preview", "preview_movie"])
def test_a_bad_flag_names_its_field(field):
    with pytest.raises(ValidationError) as caught:
        parse_form({field: "maybe"}, SETTINGS)
    assert caught.value.field == field and caught.value.code == "not_a_flag"


def test_workers_ask_for_previews_first_at_the_top_priority():
    assert devices.queues_for("farm", []) == ["farm.preview", "farm"]
    assert devices.preview_queue(devices.gpu_queue("farm")) == "farm.gpu.preview"
    assert broker_priority(0, "farm.preview") == 0 == broker_priority(9, "farm")  # kombu pops step 0 first
    assert broker_priority(0, "farm") == 9
