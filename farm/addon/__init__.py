"""The Blender add-on (`farm addon` writes it): a Render Properties panel that submits the open file to the farm and
follows its job. `farm_submit/` is the add-on itself (it runs inside Blender); `submitting.py` is its work away from
Blender's main thread, and ships inside the zip with the farm's own packing and sending code (`building.py`)."""
