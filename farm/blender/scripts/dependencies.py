"""Runs inside Blender: every file a loaded .blend reads from disk when it renders, as Blender itself resolves it.

Tracing with the farm's own Blender, in the process that already opened the file (scripts off) to read its scene,
means the list is what the renderer will look for — linked libraries at any depth (Blender has loaded them),
UDIM tiles, image sequences, fonts, sounds, movie clips, Alembic/USD caches, OpenVDB volumes, baked point caches,
fluid caches and Geometry Nodes bakes — with no second reader of the file format to keep in step with Blender.

Each entry: `kind`; `path` as the file stores it; `abs`, resolved the way Blender resolves it (`//` is the folder
of the .blend that holds the reference, a linked library's own for its data; Windows `\\` separators read as `/`,
as Blender reads them on every system);
`form`: `file`, `tiles` (UDIM: `abs` holds `<UDIM>`, `tiles` the numbers), `sequence` (`abs` is the first file of
a numbered run) or `folder` (a cache folder). Only paths are reported; nothing outside the project is opened here:
the caller decides what exists, by path, inside the project only.

Standalone on purpose (stdlib + bpy), like the scripts beside it.
"""

import os
import re

import bpy

DRIVE = re.compile(r"^[A-Za-z]:/")


def resolve(path, base):
    """`path` as Blender reads it from a file whose folder is `base`."""
    path = path.replace("\\", "/")
    if path.startswith("//"):
        path = os.path.join(base, path[2:])
    if DRIVE.match(path):  # a Windows drive: never found on this machine
        return path
    return os.path.normpath(os.path.join(base, path))


def library_paths():
    """Each library's file. Blender rebases every library path, indirect ones too, on the main file's folder when
    it loads them (its log says so: "Read library: ABS, AS_STORED, parent ..."), so all resolve against it."""
    main = os.path.dirname(bpy.data.filepath)
    return main, {lib.name_full: resolve(lib.filepath, main) for lib in bpy.data.libraries}


def trace():
    """Every external file of the loaded .blend; packed data is inside the file and not listed."""
    main, libraries = library_paths()
    entries = []

    def add(kind, path, owner=None, form="file", **extra):
        if not path or path.startswith("<"):  # `<builtin>` font, and the like
            return
        base = os.path.dirname(libraries[owner.name_full]) if owner is not None else main
        entries.append(dict(kind=kind, path=path, abs=resolve(path, base), form=form, **extra))

    for lib in bpy.data.libraries:
        if not lib.packed_file:
            entries.append(dict(kind="library", path=lib.filepath, abs=libraries[lib.name_full], form="file"))
    for image in bpy.data.images:
        if image.packed_file or image.source not in ("FILE", "SEQUENCE", "MOVIE", "TILED"):
            continue
        if image.source == "TILED":
            add("image", image.filepath, image.library, "tiles", tiles=[t.number for t in image.tiles])
        else:
            add("image", image.filepath, image.library, "sequence" if image.source == "SEQUENCE" else "file")
    for font in bpy.data.fonts:
        if not font.packed_file:
            add("font", font.filepath, font.library)
    for sound in bpy.data.sounds:
        if not sound.packed_file:
            add("sound", sound.filepath, sound.library)
    for clip in bpy.data.movieclips:
        add("movie_clip", clip.filepath, clip.library, "sequence" if clip.source == "SEQUENCE" else "file")
    for cache in bpy.data.cache_files:
        add("cache", cache.filepath, cache.library, "sequence" if cache.is_sequence else "file")
        for layer in getattr(cache, "layers", ()):
            add("cache", layer.filepath, cache.library)
    for volume in bpy.data.volumes:
        if not volume.packed_file:
            add("volume", volume.filepath, volume.library, "sequence" if volume.is_sequence else "file")
    for obj in bpy.data.objects:
        blend = os.path.splitext(os.path.basename(libraries.get(getattr(obj.library, "name_full", ""), "")))[0]
        blend = blend or os.path.splitext(os.path.basename(bpy.data.filepath))[0]
        for cache in point_caches(obj):
            if cache.use_disk_cache and cache.is_baked:
                folder = cache.filepath if cache.use_external else f"//blendcache_{blend}"
                add("point_cache", folder, obj.library, "folder")
        for mod in obj.modifiers:
            if mod.type == "FLUID" and mod.fluid_type == "DOMAIN" and fluid_baked(mod.domain_settings):
                add("fluid_cache", mod.domain_settings.cache_directory, obj.library, "folder")
            if mod.type == "NODES" and getattr(mod, "bake_target", "DISK") == "DISK":
                for folder in node_bake_folders(mod):
                    add("bake", folder, obj.library, "folder")
    for scene in bpy.data.scenes:
        editor = scene.sequence_editor
        strips = getattr(editor, "strips_all", None) or getattr(editor, "sequences_all", None) or ()
        for strip in strips:
            if strip.type == "IMAGE" and strip.elements:
                add("image", os.path.join(strip.directory, strip.elements[0].filename), scene.library, "sequence")
            elif strip.type == "MOVIE":
                add("movie", strip.filepath, scene.library)
    return entries


def point_caches(obj):
    for mod in obj.modifiers:
        cache = getattr(mod, "point_cache", None)
        if cache is not None:
            yield cache
    for system in obj.particle_systems:
        yield system.point_cache


def fluid_baked(domain):
    """A domain that reads baked data (`ALL`, `MODULAR`): without its folder it shows nothing. A `REPLAY` domain
    simulates as it renders, into the farm's scratch, and needs no files."""
    return domain.cache_type != "REPLAY"


def node_bake_folders(mod):
    """Where a Geometry Nodes modifier's bakes live on disk: each bake's own folder, or the modifier's (Blender
    writes a bake there once baked, so an empty `bake_directory` means nothing baked to disk)."""
    folders = []
    for bake in getattr(mod, "bakes", ()):
        if getattr(bake, "bake_target", "INHERIT") == "PACKED":
            continue
        if getattr(bake, "use_custom_path", False) and bake.directory:
            folders.append(bake.directory)
        elif mod.bake_directory:
            folders.append(mod.bake_directory)
    return list(dict.fromkeys(folders))
