"""Runs inside Blender: merge the parts of a split still (farm/jobs/splitting.py) into the frame's image, written as
one machine's render of the scene would be (its view transform, look, exposure, dither and image format).

It reads only the farm's own files: the parts' OpenEXRs, downloaded by the packager into its scratch folder (their
sha256 checked against what the renderers recorded), and a spec the packager wrote. No .blend is opened.

Samples (Cycles): each part's noisy render, alpha and denoising passes are averaged, weighted by the part's share of
the samples, in the compositor (Blender's Python cannot read a multilayer EXR's pixels), then denoised once with
OpenImageDenoise when the scene denoises, as Cycles would have denoised the whole. Tiles: each band's own rows,
overscan cut away, are copied into one frame. Either way the compositor's output is written by a render that
renders nothing (no Render Layers node), so the still is saved exactly as a render's result is.

Standalone on purpose (stdlib, bpy and the numpy bundled with it), so it works under a `blender` binary too.
Usage: <blender> merge_parts.py -- '<json spec>'
"""

import contextlib
import json
import os
import sys

import bpy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from channel import emit, run

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "OPEN_EXR": "OPEN_EXR"}


class MergeError(Exception):
    pass


def output_scene(spec):
    """An empty scene whose render result is the compositor's, at the still's size, with the scene's own output
    settings (the recipe the parts reported)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y, render.resolution_percentage = spec["width"], spec["height"], 100
    render.use_compositing = True
    render.use_sequencer = False
    recipe = spec["recipe"]
    image = render.image_settings
    image.file_format = FORMATS[spec["output_format"]]
    for name in ("color_mode", "color_depth", "compression", "quality", "exr_codec"):
        if name in recipe:  # one not offered for this format keeps Blender's default for it, as in a render
            with contextlib.suppress(TypeError, ValueError):
                setattr(image, name, recipe[name])
    if "dither" in recipe:
        render.dither_intensity = recipe["dither"]
    if "display_device" in recipe:
        scene.display_settings.display_device = recipe["display_device"]
    for name in ("view_transform", "look", "exposure", "gamma"):
        if name in recipe:
            setattr(scene.view_settings, name, recipe[name])
    scene.use_nodes = True
    scene.node_tree.nodes.clear()
    return scene


def load(path):
    image = bpy.data.images.load(path, check_existing=False)
    image.alpha_mode = "PREMUL"  # what Blender writes into an EXR, and keeps in its float buffers
    return image


def weighted_sum(tree, sockets):
    """The weighted mean of (socket, weight) pairs, as a chain of Mix nodes: each step mixes the next part in by
    its share of the weight so far."""
    total, mean = 0.0, None
    for socket, weight in sockets:
        total += weight
        if mean is None:
            mean = socket
            continue
        mix = tree.nodes.new("CompositorNodeMixRGB")
        mix.blend_type = "MIX"
        mix.inputs[0].default_value = weight / total
        tree.links.new(mean, mix.inputs[1])
        tree.links.new(socket, mix.inputs[2])
        mean = mix.outputs[0]
    return mean


def output_of(node, name):
    found = node.outputs.get(name)
    if found is None or not found.enabled:
        raise MergeError(f"a part has no {name!r} pass: {[s.name for s in node.outputs if s.enabled]}")
    return found


def merge_samples(scene, spec):
    """Average the parts' passes by their shares of the samples, denoise once if the scene does, keep the alpha."""
    tree, recipe = scene.node_tree, spec["recipe"]
    nodes = []
    for part in spec["parts"]:
        node = tree.nodes.new("CompositorNodeImage")
        node.image = load(part["path"])
        nodes.append((node, part["weight"]))
    width, height = nodes[0][0].image.size  # the scene's own border may have cropped its render
    if width and height:
        scene.render.resolution_x, scene.render.resolution_y = width, height
    image = weighted_sum(tree, [(output_of(n, "Combined"), w) for n, w in nodes])
    alpha = weighted_sum(tree, [(output_of(n, "Alpha"), w) for n, w in nodes])
    if recipe.get("denoise"):
        denoise = tree.nodes.new("CompositorNodeDenoise")
        denoise.use_hdr = True
        denoise.prefilter = recipe.get("denoise_prefilter", "ACCURATE")
        if "denoise_quality" in recipe and hasattr(denoise, "quality"):
            denoise.quality = recipe["denoise_quality"]
        tree.links.new(image, denoise.inputs["Image"])
        passes = recipe.get("denoise_passes", "RGB_ALBEDO_NORMAL")
        if passes in ("RGB_ALBEDO", "RGB_ALBEDO_NORMAL"):
            albedo = [(output_of(n, "Denoising Albedo"), w) for n, w in nodes]
            tree.links.new(weighted_sum(tree, albedo), denoise.inputs["Albedo"])
        if passes == "RGB_ALBEDO_NORMAL":
            normal = [(output_of(n, "Denoising Normal"), w) for n, w in nodes]
            tree.links.new(weighted_sum(tree, normal), denoise.inputs["Normal"])
        image = denoise.outputs["Image"]
    return image, alpha


def merge_tiles(scene, spec):
    """Copy each band's own rows (its overscan cut away) into one frame."""
    width, height = spec["width"], spec["height"]
    frame = np.zeros((height, width, 4), dtype=np.float32)
    for part in spec["parts"]:
        (low, high), (keep_low, keep_high) = part["rows"], part["keep"]
        image = load(part["path"])
        if tuple(image.size) != (width, high - low):
            raise MergeError(f"a band is {tuple(image.size)}, not {(width, high - low)}")
        pixels = np.empty(width * (high - low) * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        frame[keep_low:keep_high] = pixels.reshape(high - low, width, 4)[keep_low - low : keep_high - low]
    merged = bpy.data.images.new("merged", width, height, alpha=True, float_buffer=True)
    merged.alpha_mode = "PREMUL"
    merged.pixels.foreach_set(frame.ravel())
    node = scene.node_tree.nodes.new("CompositorNodeImage")
    node.image = merged
    return node.outputs["Image"], node.outputs["Alpha"]


def main(spec):
    scene = output_scene(spec)
    image, alpha = (merge_samples if spec["mode"] == "samples" else merge_tiles)(scene, spec)
    tree = scene.node_tree
    set_alpha = tree.nodes.new("CompositorNodeSetAlpha")
    set_alpha.mode = "REPLACE_ALPHA"
    tree.links.new(image, set_alpha.inputs["Image"])
    tree.links.new(alpha, set_alpha.inputs["Alpha"])
    composite = tree.nodes.new("CompositorNodeComposite")
    tree.links.new(set_alpha.outputs[0], composite.inputs["Image"])
    scene.render.filepath = spec["out"]
    bpy.ops.render.render(write_still=True)
    if not os.path.isfile(spec["out"] + scene.render.file_extension):
        raise MergeError("the compositor wrote no image")
    emit(event="merged")
    return 0


def start():
    spec = json.loads(sys.argv[sys.argv.index("--") + 1])
    try:
        return main(spec)
    except (MergeError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        emit(event="error", message=f"merging the parts failed: {exc}")
        return 2


if __name__ == "__main__":
    run(start)
