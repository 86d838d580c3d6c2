"""The add-on's zip as `farm addon` writes it: one folder both Blender installers take, the farm's own modules in it
byte for byte (not a fork), an extension manifest and bl_info that agree, and the same zip from the same sources."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import blender_asset_tracer

from farm.addon.building import SHIPPED, write_zip

ROOT = Path(__file__).parents[2]


def farm_addon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "farm", "addon", *args], capture_output=True, text=True, timeout=60)


def test_zip_holds_one_folder_with_the_farms_own_code(tmp_path: Path) -> None:
    done = farm_addon("-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    path = tmp_path / "out" / "farm_submit.zip"
    assert done.stdout.strip() == str(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"farm_submit"}
        for rel in SHIPPED:
            assert zf.read(f"farm_submit/vendor/farm/{rel}") == (ROOT / "farm" / rel).read_bytes(), rel
        # Nothing of the farm beyond what the add-on runs: no storage layer, no web app, no settings.
        assert {n for n in names if n.startswith("farm_submit/vendor/farm/")} == {
            f"farm_submit/vendor/farm/{rel}" for rel in SHIPPED
        }
        bat = Path(blender_asset_tracer.__file__).parent
        assert (
            zf.read("farm_submit/vendor/blender_asset_tracer/trace/__init__.py")
            == (bat / "trace" / "__init__.py").read_bytes()
        )
        assert not [n for n in names if "__pycache__" in n]
        manifest = tomllib.loads(zf.read("farm_submit/blender_manifest.toml").decode())
        source = zf.read("farm_submit/__init__.py").decode()
    bl_info = next(
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "bl_info"
    )
    assert manifest["id"] == "farm_submit" and manifest["type"] == "add-on"
    assert manifest["version"] == ".".join(map(str, bl_info["version"]))
    assert manifest["blender_version_min"] == ".".join(map(str, bl_info["blender"])) == "4.2.0"
    assert set(manifest["permissions"]) == {"files", "network"}


def test_same_sources_give_the_same_zip(tmp_path: Path) -> None:
    first = write_zip(tmp_path / "a").read_bytes()
    assert write_zip(tmp_path / "b").read_bytes() == first
    assert write_zip(tmp_path / "a").read_bytes() == first  # rewritten whole, in place
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["farm_submit.zip"]


def test_an_output_that_is_a_file_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    done = farm_addon("-o", str(tmp_path / "taken"))
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "taken" in done.stderr, done.stderr
