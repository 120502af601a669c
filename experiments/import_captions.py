"""Import released caption files into the caption store (``datamodules/captions.py``).

    python -m experiments.prepare import-captions --format narvid --input MSRVTT_narration.json \\
        --dataset msrvtt --root /data/msrvtt --out /data/msrvtt/captions/narration_narvid.jsonl \\
        --frames-dir /data/msrvtt/frames_1fps_224_max12_narvid
    python -m experiments.prepare import-captions --format cap4video --dataset msrvtt --root /data/msrvtt \\
        --input msrvtt_train_with_vitb32_max1_title_titles.json --input MSRVTT_JSFUSION_test_titles.json \\
        --out /data/msrvtt/captions/multi_cap4video.jsonl

The dataset's video ids come from the data module parsing ``--root`` (the code training uses), over the
splits ``experiments.prepare`` checks. Every id of the file must be one of them (``--ignore-id-extension``
matches ``video1.mp4`` to ``video1``; ``--skip-unknown`` leaves out ids of other splits, reported), and every
video of the splits must be in the file(s) (``--allow-missing`` imports anyway and reports the missing ids).
Nothing is written unless the whole import passes; the store is then replaced atomically (a temporary file
renamed over it), one JSON line per record, ``--append`` keeping the records already there.

**NarVid narration** (``MSRVTT_narration.json``, ``msvd_narration.json``, ``vatex_narration.json``,
``didemo_narration.json`` of the authors' release): a JSON list of ``{"video_file": id, "caption_1": str,
..., "caption_N": str}``, one caption per frame that the authors' extractor saved (OpenCV at 1 fps: decoded
frame ``s * int(fps)`` for each second ``s``; when a video has more seconds than ``max_frames``, only
``linspace(0, n-1, max_frames)`` of them), in frame order; their loader gives caption ``i`` to the ``i``-th
frame of that folder. Captions are ordered by the integer in the key (``caption_10`` after ``caption_9``);
the keys must run from ``caption_1`` to ``caption_N`` without gaps. Records are kind ``narration`` with
``frame_indices`` in one of two index spaces (``--index-space``):

* ``frames`` (default): the position of each caption's frame in the video's extracted frame folder,
  ``0..N-1``, for ``reader: frames`` on folders that hold exactly the authors' frames: ``python -m
  experiments.prepare <ds> ... --extract-frames --frames-fps 1 --frames-sampler narvid --frames-max 12`` (32
  for DiDeMo). With ``--frames-dir`` every folder's frame count must equal the caption count. The loader then
  samples positions of those folders, all narrated: ``narration_match: exact`` aligns them for any
  ``num_frames`` and either ``train_sampling``.
* ``video``: decoded-frame indices of the video files (``reader: decord|pyav``): the authors' 1-fps frame
  ``p`` of a video with ``F`` frames at ``fps`` is frame ``p * int(fps)`` of the original (of
  ``ceil(F / int(fps))`` such frames, ``linspace`` down to the caption count when there are more), its time
  mapped onto the video training decodes (the manifest's re-encoded copy, if any). ``fps`` and ``F`` come
  from ``vtr_manifest.json`` (the original's, recorded under ``source``) or from probing the video. The
  loader's uniformly sampled frames are rarely exactly the narrated ones: use ``narration_match: nearest``.

**Cap4Video captions** (docs/how-to/captions.md, "Reproduce NarVid with the authors' narration files"; the shape is
detected): MSR-VTT
train ``msrvtt_train_with_vitb32_max1_title_titles.json`` (``"titles"``: vid -> captions, ``"title"``: vid -> the
selected caption, a str or a list), MSR-VTT test ``MSRVTT_JSFUSION_test_titles.json`` (vid -> ``{"gt",
"titles"}``; ``gt`` is the query, not imported), VATEX train ``vatex_train_vitb32_max1_nopro_final.json``
(vid -> ``{"captions", "max1"}``) and VATEX test ``vatex_test_vitb32_it30_prompt.json`` (vid -> captions).
Records are kind ``multi``: the **selected caption(s) first** (``title`` / ``max1``; Cap4Video also trains
on them as extra query pairs), then the generated captions in file order, with the one occurrence that the
selected caption was picked from removed (so K stays the file's count, or K + 1 when the selected caption is
not among them); ``"selected"`` in the record lists them, so ``captions[:len(selected)]`` are the selected
ones. Train and test files go into one store by repeating ``--input`` (or ``--append`` to an existing store;
a second record of the same kind for a video is an error).
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from callbacks.caption_writer import encode_record
from datamodules.annotations import read_json
from datamodules.atomic import atomic_write
from datamodules.base import MANIFEST_NAME, VideoTextDataModule, read_manifest
from datamodules.captions import CaptionStore
from datamodules.jsonl import repaired_bytes
from datamodules.readers import VIDEO_EXTENSIONS, FrameFolderReader, VideoDecodeError
from experiments.video_datasets import DATASETS, LISTING_OPTIONS, SPLITS, data_module_options, linspace_positions, probe

Format = Literal["narvid", "cap4video"]
IndexSpace = Literal["frames", "video"]

# the authors' LLaVA prompt (NarVid's released code), as lightning_modules.captioning.captioner.NARVID_PROMPT
NARVID_PROMPT = "Please describe this image for image-captioning task."
NARVID_MODEL = "narvid-release (LLaVA-1.5-7B)"
CAP4VIDEO_MODEL = "cap4video-release (Video ZeroCap, CLIP ViT-B/32)"
NARVID_MAX_FRAMES = {"msrvtt": 12, "msvd": 12, "vatex": 12, "didemo": 32}
CAPTION_KEY = re.compile(r"caption_(\d+)")
SHOWN = 5  # ids named in an error or a warning


class CaptionImportError(ValueError):
    """A released caption file does not fit the dataset or its format; the message says what to do."""


@dataclass
class ImportedVideo:
    """The captions of one video as read from a released file."""

    file_id: str
    captions: list[str]
    source: Path
    where: str
    selected: list[str] = field(default_factory=list)
    shape: str = ""
    video_id: str = ""  # the dataset's id, once matched


def load_input(path: Path) -> Any:
    """A released file's JSON, strictly (``datamodules.jsonl.parse_json``: UTF-8, no duplicate keys, no lone
    surrogates); a missing or malformed file is an import error naming it."""
    if not path.is_file():
        raise CaptionImportError(f"--input {path} not found")
    try:
        return read_json(path)
    except ValueError as exc:  # read_json names the file and the position of the problem
        raise CaptionImportError(str(exc)) from None


# --------------------------------------------------------------------------------------------- NarVid
def parse_narvid(path: Path) -> list[ImportedVideo]:
    """The records of a NarVid narration file, captions ordered by the integer of their key."""
    data = load_input(path)
    if not isinstance(data, list):
        hint = " (an object: is this a Cap4Video file? use --format cap4video)" if isinstance(data, dict) else ""
        raise CaptionImportError(f"{path}: expected a JSON list of {{'video_file', 'caption_1', ...}} (NarVid "
                                 f"narration), got {type(data).__name__}{hint}")
    videos = []
    for k, item in enumerate(data):
        where = f"{path}: record #{k}"
        if not isinstance(item, dict):
            raise CaptionImportError(f"{where} is a {type(item).__name__}, not an object")
        vid = item.get("video_file")
        if not isinstance(vid, str) or not vid.strip():
            raise CaptionImportError(f"{where} lacks 'video_file' (keys: {sorted(item)[:6]}); every record names "
                                     "its video")
        where = f"{path}: record #{k} (video {vid!r})"
        numbered: dict[int, str] = {}
        for key, value in item.items():
            if key == "video_file":
                continue
            match = CAPTION_KEY.fullmatch(key)
            if match is None:  # the authors' loader reads len(record) - 1 captions: any other key breaks it
                raise CaptionImportError(f"{where}: unexpected key {key!r}; a NarVid record holds 'video_file' and "
                                         "'caption_1' ... 'caption_N' only")
            number = int(match.group(1))
            if number in numbered:
                raise CaptionImportError(f"{where}: caption number {number} appears twice ({key!r})")
            if not isinstance(value, str) or not value.strip():
                raise CaptionImportError(f"{where}: caption {key!r} is empty; the store admits no empty caption, "
                                         "and dropping it would shift every later caption onto the wrong frame")
            numbered[number] = value
        if not numbered:
            raise CaptionImportError(f"{where} has no captions (no 'caption_<n>' keys)")
        expected = set(range(1, len(numbered) + 1))
        if set(numbered) != expected:
            absent = sorted(expected - set(numbered))
            extra = sorted(set(numbered) - expected)
            raise CaptionImportError(f"{where}: caption keys have gaps: caption_1..caption_{len(numbered)} expected, "
                                     f"missing {[f'caption_{n}' for n in absent[:SHOWN]]}, beyond the count "
                                     f"{[f'caption_{n}' for n in extra[:SHOWN]]}; caption i belongs to frame i, "
                                     "so a gap makes the alignment unknowable")
        videos.append(ImportedVideo(vid, [numbered[n] for n in sorted(numbered)], path, where, shape="narvid"))
    if not videos:
        raise CaptionImportError(f"{path}: the file holds no records")
    return videos


# --------------------------------------------------------------------------------------------- Cap4Video
CAP4VIDEO_SHAPES = {
    "msrvtt_train": "MSR-VTT train (msrvtt_train_with_vitb32_max1_title_titles.json): "
                    "{'titles': {vid: [captions]}, 'title': {vid: caption}, ...}",
    "msrvtt_test": "MSR-VTT test (MSRVTT_JSFUSION_test_titles.json): {vid: {'gt': str, 'titles': [captions]}}",
    "vatex_train": "VATEX train (vatex_train_vitb32_max1_nopro_final.json): {vid: {'captions': [...], 'max1': str}}",
    "vatex_test": "VATEX test (vatex_test_vitb32_it30_prompt.json): {vid: [captions]}",
}


def detect_cap4video_shape(data: Any, path: Path) -> str:
    """Which of the four released Cap4Video layouts ``data`` has (an error listing them if none)."""
    if isinstance(data, dict) and isinstance(data.get("titles"), dict):
        return "msrvtt_train"
    if isinstance(data, dict) and data:
        first = next(iter(data.values()))
        if isinstance(first, dict) and "titles" in first:
            return "msrvtt_test"
        if isinstance(first, dict) and "captions" in first:
            return "vatex_train"
        if isinstance(first, list):
            return "vatex_test"
        found = f"an object whose first value is {type(first).__name__}" + (
            f" with keys {sorted(first)[:6]}" if isinstance(first, dict) else "")
    else:
        found = f"{type(data).__name__}" + (" (a list: is this a NarVid narration file? use --format narvid)"
                                            if isinstance(data, list) else "")
    shapes = "; ".join(CAP4VIDEO_SHAPES.values())
    raise CaptionImportError(f"{path}: not a Cap4Video caption file: found {found}. Expected one of: {shapes}")


def _caption_list(value: Any, where: str) -> list[str]:
    """A list of non-empty strings (a lone string counts as one caption, as Cap4Video's loaders read it)."""
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not captions:
        raise CaptionImportError(f"{where}: expected a non-empty list of captions, got {value!r:.80}")
    for k, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise CaptionImportError(f"{where}: caption #{k} is empty or not a string ({caption!r:.40}); the store "
                                     "admits no empty caption: remove it from the file")
    return list(captions)


def selected_first(selected: list[str], generated: list[str]) -> list[str]:
    """The selected captions, then the generated ones without the occurrence each selected one was picked from."""
    rest = list(generated)
    for caption in selected:
        if caption in rest:
            rest.remove(caption)  # only the first occurrence: genuine repeats among the generated ones stay
    return [*selected, *rest]


def parse_cap4video(path: Path) -> list[ImportedVideo]:
    """The videos of one Cap4Video caption file, selected caption(s) first (see the module docstring)."""
    data = load_input(path)
    shape = detect_cap4video_shape(data, path)
    entries: list[tuple[str, Any, Any]] = []  # (vid, generated, selected)
    if shape == "msrvtt_train":
        titles, title = data["titles"], data.get("title", {})
        if not isinstance(title, dict):
            raise CaptionImportError(f"{path}: 'title' must be an object vid -> selected caption, got "
                                     f"{type(title).__name__}")
        entries = [(vid, titles.get(vid), title.get(vid)) for vid in dict.fromkeys([*titles, *title])]
    else:
        for vid, value in data.items():
            if shape == "vatex_test":
                entries.append((vid, value, None))
                continue
            if not isinstance(value, dict):
                raise CaptionImportError(f"{path}: entry {vid!r} is a {type(value).__name__}; "
                                         f"{CAP4VIDEO_SHAPES[shape]}")
            key, selected_key = ("titles", None) if shape == "msrvtt_test" else ("captions", "max1")
            if key not in value:
                raise CaptionImportError(f"{path}: entry {vid!r} lacks {key!r} (keys: {sorted(value)[:6]}); "
                                         f"{CAP4VIDEO_SHAPES[shape]}")
            entries.append((vid, value[key], value.get(selected_key) if selected_key else None))
    videos = []
    for vid, generated, selected in entries:
        where = f"{path}: video {vid!r}"
        chosen = _caption_list(selected, f"{where} (selected caption)") if selected is not None else []
        captions = _caption_list(generated, where) if generated is not None else []
        if not captions and not chosen:
            raise CaptionImportError(f"{where} has no captions")
        chosen = list(dict.fromkeys(chosen))  # a selected caption listed twice is still one caption
        videos.append(ImportedVideo(str(vid), selected_first(chosen, captions), path, where, selected=chosen,
                                    shape=shape))
    if not videos:
        raise CaptionImportError(f"{path}: the file holds no videos")
    return videos


# --------------------------------------------------------------------------------------------- dataset side
def dataset_splits(args: argparse.Namespace) -> tuple[VideoTextDataModule, dict[str, list[str]]]:
    """The dataset's split ids, parsed by its data module (the code training uses); a bad annotation file under
    ``--root`` is an import error (its message names the file)."""
    kwargs: dict[str, Any] = {"root": str(args.root), "manifest": None, **args.options,
                              **LISTING_OPTIONS.get(args.dataset, {})}
    if args.videos is not None:
        kwargs["video_dir"] = str(args.videos.resolve())
    dm = DATASETS[args.dataset](**kwargs)
    try:
        return dm, {name: [v.video_id for v in dm.load_split(name).videos] for name in SPLITS[args.dataset]}
    except (ValueError, FileNotFoundError) as exc:
        raise CaptionImportError(f"--root {args.root} ({args.dataset}): {exc}") from None


def _stem(video_id: str) -> str:
    return Path(video_id).stem if Path(video_id).suffix.lower() in VIDEO_EXTENSIONS else video_id


def match_ids(videos: list[ImportedVideo], known: list[str], ignore_extension: bool, skip_unknown: bool,
              dataset: str) -> tuple[list[ImportedVideo], list[str]]:
    """Give each video its dataset id; fail on ids not in the splits (naming an extension-only difference)."""
    known_set = set(known)
    by_stem: dict[str, list[str]] = {}
    for vid in known:
        by_stem.setdefault(_stem(vid), []).append(vid)
    unknown: list[ImportedVideo] = []
    extension_only: list[tuple[ImportedVideo, str]] = []
    for video in videos:
        if video.file_id in known_set:
            video.video_id = video.file_id
            continue
        twins = by_stem.get(_stem(video.file_id), [])
        if ignore_extension and len(twins) == 1:
            video.video_id = twins[0]
        elif len(twins) == 1:
            extension_only.append((video, twins[0]))
        else:
            unknown.append(video)
    if extension_only:
        video, ours = extension_only[0]
        raise CaptionImportError(
            f"{video.source}: {len(extension_only)} id(s) differ from the {dataset} split ids only by the extension, "
            f"e.g. {video.file_id!r} in the file vs {ours!r} in the splits (first: "
            f"{[v.file_id for v, _ in extension_only[:SHOWN]]}). Pass --ignore-id-extension to match them by name "
            "without extension (the store is written with the dataset's ids)")
    if unknown and not skip_unknown:
        raise CaptionImportError(
            f"{unknown[0].source}: {len(unknown)} id(s) are not in the {dataset} splits {list(SPLITS[dataset])} "
            f"parsed from --root (first: {[v.file_id for v in unknown[:SHOWN]]}). Check --dataset and --root (and "
            "--set for the split files), or pass --skip-unknown to leave them out (reported)")
    kept = [v for v in videos if v.video_id]
    first: dict[str, ImportedVideo] = {}
    for video in kept:  # 'video1' and 'video1.mp4' in one file meet here under --ignore-id-extension
        if video.video_id in first:
            raise CaptionImportError(f"{video.where}: a second record for video {video.video_id!r} (first: "
                                     f"{first[video.video_id].where}); the store holds one record per video and kind")
        first[video.video_id] = video
    return kept, [v.file_id for v in unknown]


def frames_folder_counts(frames_dir: Path, video_ids: list[str]) -> dict[str, int | None]:
    """Frames in each video's folder as the ``frames`` reader finds it (None: no folder)."""
    reader = FrameFolderReader(1)
    counts: dict[str, int | None] = {}
    for vid in video_ids:
        folder = frames_dir / _stem(vid)
        try:
            counts[vid] = reader.num_frames(folder) if folder.is_dir() else None
        except VideoDecodeError:  # a folder without images: zero frames, reported as a disagreeing count
            counts[vid] = 0
    return counts


def video_space_indices(num_captions: int, source_fps: float, source_frames: int, target_fps: float,
                        target_frames: int) -> list[int]:
    """Decoded-frame indices (of the video training reads) of the authors' 1-fps frames that were narrated."""
    period = int(source_fps)  # the authors' int(CAP_PROP_FPS)
    if period < 1:
        raise ValueError(f"frame rate {source_fps} truncates to 0")
    one_fps = math.ceil(source_frames / period)  # frames 0, period, 2 * period, ... below the frame count
    if one_fps < num_captions:
        raise ValueError(f"{num_captions} captions but the video has only {one_fps} one-second frames "
                         f"({source_frames} frames at {source_fps:g} fps)")
    positions = linspace_positions(one_fps, num_captions)  # the authors' cap to max_frames (= N when capped)
    seconds = positions * period / source_fps
    indices = np.minimum(np.round(seconds * target_fps).astype(np.int64), target_frames - 1)
    return [int(i) for i in indices]


def video_timing(video_id: str, manifest: dict[str, Any] | None, dm: VideoTextDataModule,
                 probed: bool) -> tuple[float, int, float, int] | str:
    """``(source fps, source frames, target fps, target frames)`` or why they are unknown."""
    entry = None if probed or manifest is None else manifest.get("videos", {}).get(video_id)
    if entry is None:
        entry = probe(dm.video_path(video_id))
        entry["source"] = dict(entry)
    if entry.get("status") != "present":
        return f"{entry.get('status')} ({entry.get('error') or entry.get('path')})"
    source = entry.get("source") or entry
    values = (source.get("fps"), source.get("frames"), entry.get("fps"), entry.get("frames")) \
        if isinstance(source, dict) else ()
    # numbers only (a bool or a string in a received manifest is no frame rate): never coerced
    if len(values) != 4 or not all(type(v) in (int, float) and v > 0 for v in values) \
            or type(values[1]) is not int or type(values[3]) is not int:
        return f"no valid frame rate or frame count recorded ({entry.get('path')})"
    return float(values[0]), values[1], float(values[2]), values[3]


# --------------------------------------------------------------------------------------------- store
def existing_records(out: Path) -> tuple[bytes, set[tuple[str, str]]]:
    """The store's bytes ready to be appended to (``datamodules.jsonl.repaired_bytes``: a torn last line dropped,
    also one torn inside a multi-byte character; a whole last line newline-terminated) and its (id, kind) keys. A
    store damaged before its last line is an import error naming the file and line."""
    try:
        records = CaptionStore.read_all(out)  # validates every record
        return repaired_bytes(out.read_bytes(), out), {(r.video_id, r.kind) for r in records}
    except ValueError as exc:
        raise CaptionImportError(f"--out {out} cannot be appended to: {exc}") from None


def write_store(out: Path, records: list[dict[str, Any]], keep: bytes) -> None:
    """``keep`` then one line per record, into a temporary file renamed over ``out`` (all or nothing:
    ``datamodules.atomic``): a failed import leaves ``out`` as it was and nothing beside it."""
    def fill(fh: IO[bytes]) -> None:
        fh.write(keep)
        fh.writelines(encode_record(rec) for rec in records)

    atomic_write(out, fill)


# --------------------------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.prepare import-captions",
                                description="Convert released NarVid narration / Cap4Video caption files into "
                                            "the caption store (see experiments/import_captions.py).")
    p.add_argument("--format", required=True, choices=["narvid", "cap4video"])
    p.add_argument("--input", required=True, type=Path, action="append",
                   help="released file; repeat for several (e.g. Cap4Video train + test)")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--root", required=True, type=Path, help="dataset root with the annotation/split files")
    p.add_argument("--out", required=True, type=Path, help="caption store (JSONL) to write")
    p.add_argument("--append", action="store_true",
                   help="add to an existing --out (a second record of the same kind for a video is an error)")
    p.add_argument("--index-space", choices=["frames", "video"], default="frames",
                   help="narvid: frame_indices as positions in the extracted 1-fps frame folder (reader frames) "
                        "or as decoded-frame indices of the videos (reader decord/pyav, narration_match nearest)")
    p.add_argument("--frames-dir", type=Path, default=None,
                   help="narvid: extracted frame folders <dir>/<video>/; each must hold one frame per caption")
    p.add_argument("--videos", type=Path, default=None,
                   help="--index-space video: probe these videos (default: the manifest, else the data module's "
                        "video_dir)")
    p.add_argument("--manifest", type=Path, default=None, help=f"default: <root>/{MANIFEST_NAME} when present")
    p.add_argument("--allow-missing", action="store_true",
                   help="import although videos of the splits are missing from the file(s) (reported)")
    p.add_argument("--skip-unknown", action="store_true", help="leave out file ids not in the splits (reported)")
    p.add_argument("--ignore-id-extension", action="store_true",
                   help="match file ids to split ids by name without a video extension (video1.mp4 = video1)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="data module argument, e.g. --set train_csv=MSRVTT_train.7k.csv")
    args = p.parse_args(argv)
    if args.format == "cap4video" and (args.frames_dir or args.index_space != "frames"):
        p.error("--frames-dir and --index-space apply to --format narvid only")
    reserved = {"root": "--root", "manifest": "--manifest"} | ({"video_dir": "--videos"} if args.videos else {})
    args.options = data_module_options(p, args.options, args.dataset, reserved)
    return args


def _read_all_inputs(args: argparse.Namespace) -> list[ImportedVideo]:
    videos: list[ImportedVideo] = []
    seen: dict[str, str] = {}
    for path in args.input:
        for video in parse_narvid(path) if args.format == "narvid" else parse_cap4video(path):
            if video.file_id in seen:
                raise CaptionImportError(f"{video.where}: second record for this video (first: {seen[video.file_id]});"
                                         " the store holds one record per video and kind")
            seen[video.file_id] = video.where
            videos.append(video)
    return videos


def _narration_indices(args: argparse.Namespace, videos: list[ImportedVideo], dm: VideoTextDataModule,
                       problems: list[str]) -> dict[str, Any]:
    """``frame_indices`` per video in the chosen index space, and what was checked (for the summary)."""
    facts: dict[str, Any] = {"index_space": args.index_space}
    indices: dict[str, list[int]] = {}
    if args.frames_dir is not None:
        counts = frames_folder_counts(args.frames_dir, [v.video_id for v in videos])
        absent = [vid for vid, n in counts.items() if n is None]
        if len(absent) == len(videos):
            raise CaptionImportError(f"--frames-dir {args.frames_dir} holds none of the file's videos (looked for "
                                     f"<frames-dir>/<video id without extension>/, e.g. "
                                     f"{args.frames_dir / _stem(videos[0].video_id)}); is it the extracted folder?")
        wrong = [(v, counts[v.video_id]) for v in videos if counts[v.video_id] not in (None, len(v.captions))]
        if wrong:
            most = max(len(v.captions) for v in videos)
            lines = [f"{v.video_id!r}: {len(v.captions)} captions, {n} frames in {args.frames_dir / _stem(v.video_id)}"
                     for v, n in wrong[:SHOWN]]
            raise CaptionImportError(
                f"{wrong[0][0].source}: the caption count disagrees with the frame folder of {len(wrong)} of "
                f"{len(videos)} videos ({'; '.join(lines)}). NarVid narrates one caption per frame of the authors' "
                "1-fps extraction capped at max_frames; extract the same frames with: python -m experiments.prepare "
                f"{args.dataset} --videos <original videos> --annotations {args.root} --extract-frames "
                f"--frames-fps 1 --frames-sampler narvid --frames-max {most} (the largest caption count in the file; "
                f"the authors' {args.dataset} runs use {NARVID_MAX_FRAMES[args.dataset]} frames), and pass that folder "
                "as --frames-dir")
        facts["frames_checked"] = len(videos) - len(absent)
        facts["frames_dir"] = str(args.frames_dir.resolve())
        facts["no_frame_folder"] = absent
    if args.index_space == "frames":
        return {**facts, "indices": {v.video_id: list(range(len(v.captions))) for v in videos}}
    manifest_path = args.manifest or args.root / MANIFEST_NAME
    if args.manifest is not None and not manifest_path.is_file():
        raise CaptionImportError(f"--manifest {args.manifest} not found")
    try:
        manifest = read_manifest(manifest_path) if manifest_path.is_file() else None
    except ValueError as exc:  # names the manifest and what is wrong in it
        raise CaptionImportError(str(exc)) from None
    probed = args.videos is not None or manifest is None
    facts["timing_from"] = "probed videos" if probed else str(manifest_path)
    unusable: list[str] = []
    for video in videos:
        timing = video_timing(video.video_id, manifest, dm, probed)
        if isinstance(timing, str):
            unusable.append(f"{video.video_id!r}: {timing}")
            continue
        try:
            indices[video.video_id] = video_space_indices(len(video.captions), *timing)
        except ValueError as exc:
            problems.append(f"{video.where}: {exc}")
    if unusable and not args.allow_missing:
        raise CaptionImportError(
            f"--index-space video: {len(unusable)} video(s) of the file have no readable video to compute frame "
            f"indices from (first: {unusable[:SHOWN]}). Get the videos (python -m experiments.prepare {args.dataset} "
            "lists them), use --index-space frames, or pass --allow-missing to import the rest")
    facts["no_video_timing"] = unusable
    return {**facts, "indices": indices}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one import; returns the summary it printed (videos per split, captions per video, missing ids)."""
    args = parse_args(argv)
    dm, splits = dataset_splits(args)
    known = list(dict.fromkeys(v for ids in splits.values() for v in ids))
    videos, unknown = match_ids(_read_all_inputs(args), known, args.ignore_id_extension, args.skip_unknown,
                                args.dataset)
    kind = "narration" if args.format == "narvid" else "multi"
    keep, existing = b"", set()
    if args.out.exists():
        if not args.append:
            raise CaptionImportError(f"--out {args.out} exists; pass --append to add these records to it, or choose "
                                     "another file")
        keep, existing = existing_records(args.out)
    clash = [v.video_id for v in videos if (v.video_id, kind) in existing]
    if clash:
        raise CaptionImportError(f"{args.out} already holds {kind!r} records for {len(clash)} of these videos "
                                 f"(first: {clash[:SHOWN]}); a video may have one record per kind: import into "
                                 "another --out, or leave those videos out")
    covered = {v.video_id for v in videos} | {vid for vid, k in existing if k == kind}
    missing = {name: [v for v in ids if v not in covered] for name, ids in splits.items()}
    num_missing = len({v for ids in missing.values() for v in ids})
    if num_missing and not args.allow_missing:
        detail = "; ".join(f"{name}: {len(ids)} of {len(splits[name])} (first: {ids[:SHOWN]})"
                           for name, ids in missing.items() if ids)
        raise CaptionImportError(f"{', '.join(map(str, args.input))}: {num_missing} video(s) of the {args.dataset} "
                                 f"splits are missing from the file(s): {detail}. Import the other files too "
                                 "(repeat --input, or --append), or pass --allow-missing to import anyway (reported)")
    problems: list[str] = []
    narration = _narration_indices(args, videos, dm, problems) if kind == "narration" else {}
    if problems:
        raise CaptionImportError(f"{len(problems)} record(s) do not fit their video (first: {problems[:SHOWN]}); "
                                 "check the manifest's frame counts, or use --index-space frames")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    records = []
    for video in videos:
        if kind == "narration" and video.video_id not in narration["indices"]:
            continue  # no readable video to index (allowed by --allow-missing, reported below)
        record: dict[str, Any] = {"video_id": video.video_id, "kind": kind,
                                  "prompt": NARVID_PROMPT if kind == "narration" else "",
                                  "captions": video.captions,
                                  "model": NARVID_MODEL if kind == "narration" else CAP4VIDEO_MODEL,
                                  "created": created, "source_file": video.source.name}
        if kind == "narration":
            record["frame_indices"] = narration["indices"][video.video_id]
            record["index_space"] = args.index_space
        else:
            record["selected"] = video.selected
            record["cap4video_shape"] = video.shape
        records.append(record)
    write_store(args.out, records, keep)
    return _summarise(args, kind, records, splits, missing, unknown, narration)


def _summarise(args: argparse.Namespace, kind: str, records: list[dict[str, Any]], splits: dict[str, list[str]],
               missing: dict[str, list[str]], unknown: list[str], narration: dict[str, Any]) -> dict[str, Any]:
    written = {r["video_id"]: len(r["captions"]) for r in records}
    counts = list(written.values())
    summary: dict[str, Any] = {
        "out": str(args.out), "kind": kind, "format": args.format, "inputs": [str(p) for p in args.input],
        "videos_written": len(records),
        "splits": {name: {"videos": len(ids), "imported": sum(v in written for v in ids),
                          "missing": len(missing[name]), "first_missing": missing[name][:20]}
                   for name, ids in splits.items()},
        "captions_per_video": {"min": min(counts), "mean": round(float(np.mean(counts)), 2), "max": max(counts)},
        "skipped_unknown": unknown,
        **{k: v for k, v in narration.items() if k != "indices"},
    }
    print(f"import-captions: {args.format} {', '.join(p.name for p in args.input)} -> {args.out} "
          f"({len(records)} {kind!r} records" + (f", index space {args.index_space})" if kind == "narration" else ")"))
    print("| split | videos | imported | missing |")
    print("|---|---|---|---|")
    for name, s in summary["splits"].items():
        print(f"| {name} | {s['videos']} | {s['imported']} | {s['missing']} |")
        if s["missing"]:
            print(f"  warning: {name}: {s['missing']} videos have no {kind!r} record (allowed by --allow-missing; "
                  f"training on this split needs them): first {s['first_missing'][:SHOWN]}")
    c = summary["captions_per_video"]
    print(f"captions per video: min {c['min']} / mean {c['mean']} / max {c['max']}")
    if unknown:
        print(f"  warning: skipped {len(unknown)} file ids not in the splits (--skip-unknown): first {unknown[:SHOWN]}")
    if kind == "narration":
        if "frames_checked" in narration:
            print(f"frame folders: {narration['frames_checked']} checked, counts agree")
            if narration["no_frame_folder"]:
                print(f"  warning: {len(narration['no_frame_folder'])} videos have no folder under "
                      f"{narration['frames_dir']} (not checked): first {narration['no_frame_folder'][:SHOWN]}")
        elif args.index_space == "frames":
            print("frame folders: not checked (pass --frames-dir to check one frame per caption)")
        if narration.get("no_video_timing"):
            print(f"  warning: {len(narration['no_video_timing'])} videos not imported, no readable video "
                  f"(--allow-missing): first {narration['no_video_timing'][:SHOWN]}")
        frames_dir = narration.get("frames_dir", "<frames dir>")
        use = (f"--data.init_args.reader frames --data.init_args.video_dir {frames_dir} "
               "--data.init_args.narration_match exact" if args.index_space == "frames" else
               "--data.init_args.reader decord --data.init_args.narration_match nearest")
    else:
        use = ""
    try:
        store = args.out.resolve().relative_to(args.root.resolve())
    except ValueError:
        store = args.out.resolve()
    print(f"train/test with: --data.init_args.aux_captions '{{\"{kind}\": \"{store}\"}}' {use}".rstrip())
    return summary


if __name__ == "__main__":
    main()
