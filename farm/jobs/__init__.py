"""Jobs from the form to the last frame: checking what people send, planning chunks, and every status change."""
