"""What a job should be told about its file before it renders: what the probe found that the farm will not do as the
artist's Blender would. Each warning is `{"code", "message", "path"}` (the contract's JOB `warnings`), kept with the
probe's findings in `job.scene` and shown on the job page, in the API and by `farm submit`."""

from __future__ import annotations

from typing import Any

KINDS = {
    "python_drivers": ("Python driver", "drivers that are not simple expressions keep their last saved value"),
    "text_blocks": ("text block registered to run", "its code does not run when the file is opened"),
    "script_nodes": ("OSL script node", "script nodes render as if absent"),
}


def warning(code: str, message: str, path: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "path": path}


def scene_warnings(scene: dict[str, Any]) -> list[dict[str, Any]]:
    """The probe's findings (`scripts`, `unbaked_fluids`) as warnings."""
    found: list[dict[str, Any]] = []
    scripts = scene.get("scripts") or {}
    if not scripts.get("trusted"):
        for key, (what, effect) in KINDS.items():
            count = int(scripts.get(key) or 0)
            if count:
                examples = ", ".join(scripts.get("examples", {}).get(key, []))
                found.append(
                    warning(
                        "scripts_disabled",
                        f"{count} {what}{'s' if count > 1 else ''} ({examples}) will not run: the farm renders with "
                        f"the file's scripts off, so {effect}",
                    )
                )
    for domain in scene.get("unbaked_fluids") or []:
        found.append(
            warning(
                "simulation_not_baked",
                f"the fluid domain {domain!r} has no cache beside the file: it is simulated while rendering, which "
                "is slow and may fail; bake it and upload its cache folder with the project",
            )
        )
    return found
