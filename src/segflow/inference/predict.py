"""Label new volumes with a model from the registry (or a model file), refusing hostile input.

Everything that needs no model is checked first: the input exists, the output folder is usable,
no two inputs map to one label file, no label file would land on an input or (without
`overwrite`) replace an existing file. A refused call has loaded no model and written nothing.
Each input is then checked as the validate stage checks a delivered image (present, non-empty,
the format its name says, decodable, finite intensities; same rule names and wording) and one
that breaks a rule is refused on its own: the rest of the batch goes on. Inputs far from what the
model was trained on (a constant image; shape or spacing outside the training cases' when the
model file records them) are labelled but flagged, since their labels may be meaningless.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from segflow.data import formats
from segflow.data.images import write_label
from segflow.data.msd import channel_of, split_suffix
from segflow.data.preprocess import is_planar, load_channels, prepare_image, restore_to_shape
from segflow.data.regions import Regions
from segflow.errors import SegflowError
from segflow.files import atomic_path
from segflow.inference.postprocessing import apply_postprocessing
from segflow.inference.sliding_window import PROGRESS_WINDOWS, count_windows, pick_device, predict_probabilities, to_labels
from segflow.models.model_file import ModelFile, load_model_file
from segflow.validation.contracts import content_rules, file_rules

Log = Callable[[str], None]
# An axis below half the smallest or above twice the largest training case is "far outside".
FAR_FROM_TRAINING = 2.0
# A channel whose 0.5-99.5 percentile spread is below this (relative) holds one value in >= 99 %
# of its voxels: blank or constant, nothing a network trained on real images has seen.
CONSTANT_SPREAD = 1e-6
STATISTICS_SAMPLE = 1_000_000  # voxels (a strided sample) the constant check looks at
GZIP_CHUNK = 1 << 20
# The validate stage's rules (segflow.validation.contracts) for one image file, by name: same names, same words.
IMAGE_RULES = {rule.name: rule for rule in (*file_rules("image"), *content_rules([]))}


class PredictRefused(SegflowError):
    """The call cannot start (unusable input or output folder; colliding or overwriting label
    files). No model or image has been read and nothing written."""

    exit_code = 2


class InputRefused(SegflowError):
    """One input breaks a rule (`rule` names it); the batch goes on without it."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class PredictOptions:
    overlap: float = 0.5  # sliding-window overlap
    tta: bool = True  # mirror test-time augmentation
    overwrite: bool = False  # replace existing label files (inputs are never overwritten)
    repair_nonfinite: bool = False  # replace NaN/inf voxels by the channel's finite median
    postprocess: bool = True  # the postprocessing chosen on validation (recorded in the model file)
    dataset: str | None = None  # whose champion 'champion' means, when several datasets have one


@dataclass(frozen=True)
class Job:
    """One input and the label file it gets. `channels`: every file of the input, in channel order
    (nnU-Net's `case_0000`, `case_0001`, ...); just `source` for a single-file image."""

    source: Path
    dest: Path
    channels: tuple[Path, ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        return self.channels or (self.source,)


@dataclass
class Outcome:
    """What became of one input: written to `dest`, or refused by `rule` (with `message`)."""

    source: Path
    dest: Path | None = None
    rule: str | None = None
    message: str = ""
    notes: list[str] = field(default_factory=list)  # short flags for the summary (out of distribution, ...)
    channel_files: int = 1  # files the input was read from (one per channel, nnU-Net's naming)

    @property
    def shown(self) -> str:
        """The input as the summary names it: its first file, and how many channel files it has."""
        return f"{self.source}" + (f" (+{self.channel_files - 1} channel files)" if self.channel_files > 1 else "")


@dataclass(frozen=True)
class RawImage:
    """An input as read, before the plan's preprocessing."""

    image: np.ndarray  # (C, *spatial) as stored
    affine: np.ndarray
    spacing: tuple[float, ...]


@dataclass(frozen=True)
class Predictor:
    bundle: ModelFile
    nets: list
    # A configuration ensemble's other configurations: (their model file, their networks).
    companions: tuple = ()

    def groups(self) -> list[tuple[ModelFile, list]]:
        """Each configuration with its networks, this file's own first."""
        return [(self.bundle, self.nets), *self.companions]


def to_stderr(message: str) -> None:
    print(f"predict: {message}", file=sys.stderr, flush=True)


# -- before any work: inputs, output folder, label file names --------------------------------------


def is_input_name(name: str) -> bool:
    """An image file name predict reads (segflow.data.formats: NIfTI, NRRD, MetaImage, PNG/TIF/BMP)."""
    return formats.format_from_name(name) is not None


INPUT_KINDS = ".nii/.nii.gz/.nrrd/.mha/.mhd/.png/.tif/.bmp"


def input_files(source: Path) -> list[Path]:
    """An image file, or every image file in a folder (sorted; not recursive)."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if is_input_name(p.name) and not p.is_dir())
        if not files:
            raise PredictRefused(f"{source}: folder holds no {INPUT_KINDS} file")
        return files
    if source.is_file():
        if not is_input_name(source.name):
            raise PredictRefused(f"{source}: not a {INPUT_KINDS} file")
        return [source]
    raise PredictRefused(f"{source}: no such file or folder")


def label_suffix(path: Path) -> str:
    """The label file's format is the input's: NIfTI -> .nii.gz, NRRD -> .nrrd, MetaImage -> .mha
    (one file, so staging and renaming cannot part a .mhd from its pixel file), 2D -> .png."""
    kind = formats.format_from_name(path.name)
    return {"nrrd": ".nrrd", "metaimage": ".mha"}.get(kind, ".png" if is_planar(path) else ".nii.gz")


def group_channels(files: list[Path]) -> list[tuple[str, tuple[Path, ...]]]:
    """(case id, files in channel order) per input: nnU-Net's `case_0000`, `case_0001`, ... of one
    case and format form one input (an `imagesTs/` folder as it comes); any other file is an input
    of its own, named by its stem."""
    groups: dict[tuple[str, str, str, bool], dict[int, Path]] = {}
    for path in files:
        stem, suffix = split_suffix(path.name, formats.IMAGE_SUFFIXES)
        case, index = channel_of(stem)
        # A plain `case.nii.gz` beside `case_0000.nii.gz` stays an input of its own (its label file
        # then collides with the channel group's, and the collision is refused by name).
        key = (str(path.parent), case if index is not None else stem, suffix, index is not None)
        groups.setdefault(key, {})[index if index is not None else 0] = path
    return [(case, tuple(by_index[i] for i in sorted(by_index))) for (_, case, _, _), by_index in groups.items()]


def label_name(path: Path, case_id: str | None = None) -> str:
    """The label file's name: the case id (`case` for `case_0000.nii.gz`) in the input's format."""
    stem = case_id or channel_of(split_suffix(path.name, formats.IMAGE_SUFFIXES)[0])[0]
    return f"{stem}{label_suffix(path)}"


TEST_IMAGES = "imagesTs"  # where MSD and nnU-Net deliveries keep the cases to label
DEFAULT_OUTPUT = Path("artifacts/predictions") / TEST_IMAGES


def resolve_io(source: Path | None, output: Path | None, start: Path | None = None) -> tuple[Path, Path]:
    """--input and --output as given; without --input, the dataset's imagesTs/ of the project at or
    above `start`, labelled into its artifacts/predictions/imagesTs (--output still wins)."""
    if source is not None:
        if output is None:
            raise PredictRefused("--output is required with --input (a folder for the label files)")
        return source, output
    from segflow.config import load_params
    from segflow.env import PROJECT_MARKERS, find_project_root

    root = find_project_root(start)
    if not all((root / marker).is_file() for marker in PROJECT_MARKERS):
        raise PredictRefused("no --input given, and this is not a segflow project whose dataset has an imagesTs/ "
                             "folder; pass --input and --output")
    folder = root / load_params(root / "params.yaml").data.root / TEST_IMAGES
    if not folder.is_dir():
        raise PredictRefused(f"no --input given, and the project's dataset has no {TEST_IMAGES}/ folder ({folder}); "
                             "pass --input and --output")
    return folder, output or root / DEFAULT_OUTPUT


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists."""
    path = path.absolute()
    return next((p for p in (path, *path.parents) if p.exists()), Path(path.anchor))


def check_output_folder(output: Path) -> None:
    """The output is a folder or can become one: not a file, not below a file, writable."""
    if output.exists() and not output.is_dir():
        raise PredictRefused(f"{output}: the output must be a folder, but it is a file")
    ancestor = nearest_existing(output)
    if not ancestor.is_dir():
        raise PredictRefused(f"{output}: cannot be created, it lies below the file {ancestor}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PredictRefused(f"{output}: cannot be written (no write permission in {ancestor})")


def refuse_collisions(jobs: list[Job]) -> None:
    """Two inputs that would get one label file (case.nii and case.nii.gz; names that differ only
    in case collide on macOS and Windows)."""
    first: dict[str, Job] = {}
    clashes = []
    for job in jobs:
        other = first.setdefault(job.dest.name.casefold(), job)
        if other is not job:
            clashes.append(f"{other.source} and {job.source} would both be labelled {job.dest.name}")
    if clashes:
        raise PredictRefused("; ".join(clashes) + ". Rename or move one of each pair; nothing was written")


def file_key(path: Path) -> object:
    """What identifies the file a path leads to: device and inode (links and hard links alike)
    when it exists, else the resolved path."""
    try:
        stat = path.stat()
    except OSError:
        return path.resolve()
    return stat.st_dev, stat.st_ino


def listed(paths: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def refuse_overwriting_inputs(jobs: list[Job]) -> None:
    """A label file that would land on an input (output folder = input folder, or a link)."""
    inputs = {file_key(path) for job in jobs for path in job.files}
    hits = [job.dest for job in jobs if file_key(job.dest) in inputs]
    if hits:
        raise PredictRefused(f"the label files would overwrite the inputs {listed(hits)}: choose another "
                             "--output folder (inputs are never overwritten, --overwrite or not)")


def refuse_replacing(jobs: list[Job], overwrite: bool) -> None:
    """Existing label files are replaced only with `overwrite`; a folder in the way never is."""
    folders = [job.dest for job in jobs if job.dest.is_dir()]
    if folders:
        raise PredictRefused(f"a folder stands where a label file would go: {listed(folders)}")
    existing = [job.dest for job in jobs if job.dest.exists() or job.dest.is_symlink()]
    if existing and not overwrite:
        raise PredictRefused(f"{len(existing)} label file(s) already exist: {listed(existing)}; pass "
                             "--overwrite to replace them (nothing was written)")


def plan_jobs(source: Path, output: Path, overwrite: bool = False) -> list[Job]:
    """Every input and its label file, once nothing about names and folders stands in the way."""
    jobs = [Job(files[0], output / label_name(files[0], case), files)
            for case, files in group_channels(input_files(source))]
    check_output_folder(output)
    refuse_collisions(jobs)
    refuse_overwriting_inputs(jobs)
    refuse_replacing(jobs, overwrite)
    return jobs


# -- the model ---------------------------------------------------------------------------------------


def find_registry(start: Path | None = None):
    """The registry folder (every dataset's registry, segflow.registry.catalog) of the segflow
    project at or above `start` (default: the current folder); None outside a project. Reads
    params.yaml; creates nothing."""
    from segflow.config import load_params
    from segflow.env import PROJECT_MARKERS, find_project_root
    from segflow.registry.catalog import Catalog

    root = find_project_root(start)
    if not all((root / marker).is_file() for marker in PROJECT_MARKERS):
        return None
    return Catalog(root / load_params(root / "params.yaml").register_.registry_dir)


def input_task(jobs: list[Job]) -> dict:
    """What the inputs are, to pick the champion of the dataset they belong to: spatial dims (2 for
    PNG/TIFF/BMP) and channel files per input (unknown for 2D files, whose colours are channels)."""
    planar = {formats.format_from_name(job.source.name) in formats.PLANAR_FORMATS for job in jobs}
    channels = {len(job.files) for job in jobs}
    return {"spatial_dims": 2 if planar == {True} else 3 if planar == {False} else None,
            "n_channels": next(iter(channels)) if len(channels) == 1 and planar == {False} else None}


def resolve_model(reference: str, start: Path | None = None, dataset: str | None = None,
                  task: dict | None = None) -> Path:
    """The model file `reference` names. An existing file needs no project (not even a usable
    params.yaml); inside a project the registry resolves it ('champion' of `dataset` or of the
    dataset whose task fits the input, a model id or an id prefix; a file named exactly like a
    registered model is ambiguous, see Registry.resolve)."""
    from segflow.config import ConfigError

    path = Path(reference).expanduser()
    try:
        catalog = find_registry(start)
    except ConfigError:
        if path.is_file():
            return path
        raise
    if catalog is not None:
        return catalog.resolve(reference, dataset, **(task or {}))
    if path.is_file():
        return path
    raise FileNotFoundError(f"{reference!r} is no model file, and {(start or Path.cwd()).absolute()} is not "
                            "inside a segflow project (params.yaml and dvc.yaml) whose registry could name it")


def load_predictor(model_file: Path) -> Predictor:
    """The model file's bundle and its networks, ready to run."""
    bundle = load_model_file(model_file)
    device = pick_device()
    own, *others = bundle.configurations()
    return Predictor(bundle, own.build(device), tuple((other, other.build(device)) for other in others))


# -- one input: the validate stage's file rules, then what the network needs -----------------------------


def refusal(rule: str, **values) -> InputRefused:
    """The validate stage's rule `rule`, its sentence filled with `values`."""
    return InputRefused(rule, IMAGE_RULES[rule].message.format(**values))


def gzip_length(path: Path) -> int:
    """Bytes in the whole gzip stream, checked to its end (length and checksum). nibabel reads
    only the voxel bytes it needs, so a cut-off file fails deep in the reader (an EOFError, which
    the command line turned into a bare 'Aborted.') or, cut in its last bytes, is not noticed."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(GZIP_CHUNK):
                total += len(chunk)
    except EOFError:
        raise refusal("image_readable", image_file=path, image_error="the gzip stream ends early, so the file "
                      "is truncated, e.g. by an interrupted copy or download") from None
    except (OSError, zlib.error) as exc:
        raise refusal("image_readable", image_file=path, image_error=f"corrupt gzip stream: {exc}") from None
    return total


def check_declared_size(path: Path, available: int) -> None:
    """The NIfTI header's shape and dtype fit in the bytes there are (before any are read, so a
    header claiming terabytes cannot exhaust memory)."""
    import nibabel as nib

    header = nib.load(str(path)).header
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    needed = int(header.get_data_offset()) + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed > available:
        raise refusal("image_readable", image_file=path, image_error=(
            f"its header declares a {'x'.join(map(str, shape))} {dtype} image ({needed:,} bytes) but the file "
            f"holds {available:,} bytes: truncated or a wrong header"))


def format_found(path: Path, found: str) -> str:
    """The sniffed format in words; 'unknown' bytes that read as text say so."""
    if found != "unknown":
        return found
    with open(path, "rb") as handle:
        start = formats.text_start(handle.read(256))
    return f"plain text ({start!r}...)" if start is not None else "of no known image format"


def check_file(path: Path) -> None:
    """The validate stage's file rules: present, non-empty, the format its name says."""
    if not path.is_file():
        raise refusal("image_present", image_file=path)
    if path.stat().st_size == 0:
        raise refusal("image_nonempty", image_file=path)
    expected, found = formats.format_from_name(path.name), formats.sniff_format(path)
    if found != expected:
        raise refusal("image_format", image_file=path, image_format_expected=expected,
                      image_format=format_found(path, found))


def check_channel_files(files: Sequence[Path]) -> None:
    """One file per channel: `_0000`, `_0001`, ... without a gap (a missing channel file is named)."""
    indices = [channel_of(split_suffix(p.name, formats.IMAGE_SUFFIXES)[0])[1] for p in files]
    if len(files) > 1 and indices != list(range(len(files))):
        stem, suffix = split_suffix(files[0].name, formats.IMAGE_SUFFIXES)
        missing = next(i for i in range(len(files) + 1) if i not in indices)
        raise refusal("image_present", image_file=files[0].parent / f"{channel_of(stem)[0]}_{missing:04d}{suffix}")


def read_input(files: Path | Sequence[Path]) -> RawImage:
    """The checked input (one file, or one per channel) as (C, *spatial), read as the pipeline
    reads a case; any reader failure refuses this input only (rule image_readable)."""
    files = [Path(files)] if isinstance(files, (str, Path)) else list(files)
    check_channel_files(files)
    for path in files:
        check_file(path)
    try:
        for path in files:
            kind = formats.format_from_name(path.name)
            if kind in ("gzip", "nifti"):
                check_declared_size(path, gzip_length(path) if kind == "gzip" else path.stat().st_size)
        image, affine, spacing = load_channels(files)
    except InputRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises, this file is unreadable
        shown = files[0] if len(files) == 1 else f"{files[0]} (with {len(files) - 1} more channel file(s))"
        raise refusal("image_readable", image_file=shown, image_error=f"{type(exc).__name__}: {exc}") from None
    return RawImage(image, affine, spacing)


def check_fits_network(path: Path, raw: RawImage, bundle: ModelFile) -> None:
    """The image has the network's number of spatial dimensions and channels."""
    spatial, dims = raw.image.shape[1:], len(bundle.patch_size)
    if len(spatial) != dims:
        raise InputRefused("spatial_dims", f"the image {path} is {len(spatial)}D (shape {list(spatial)}); "
                                           f"the model segments {dims}D images")
    expected = bundle.network_args.get("in_channels", 1)
    if raw.image.shape[0] != expected:
        raise InputRefused("channel_count", f"the image {path} has {raw.image.shape[0]} channel(s); the model "
                                            f"expects {expected} (files named <case>_0000, <case>_0001, ... are "
                                            "read as the channels of one case, nnU-Net's convention)")


def nonfinite_count(image: np.ndarray) -> int:
    """NaN and infinite voxels (integer images have none)."""
    if not np.issubdtype(image.dtype, np.inexact):
        return 0
    return int(image.size - np.count_nonzero(np.isfinite(image)))


def repair_nonfinite(path: Path, image: np.ndarray) -> np.ndarray:
    """NaN/inf voxels replaced by their channel's finite median. The median rather than 0: it
    lies inside the image's own intensities whatever the units (0 may be far outside them, e.g.
    in CT where air is -1000), and a few median voxels barely move the z-score statistics."""
    repaired = np.array(image, dtype=np.float32)
    for channel in repaired:
        bad = ~np.isfinite(channel)
        if bad.all():
            raise InputRefused("intensities_finite", f"the image {path} holds no finite intensity to repair from")
        channel[bad] = np.median(channel[~bad])
    return repaired


def finite_input(path: Path, raw: RawImage, repair: bool, log: Log) -> tuple[RawImage, list[str]]:
    """The validate stage's intensities_finite rule: refuse NaN/inf voxels, or with `repair`
    replace them (see repair_nonfinite) and warn. Returns the image and its summary notes."""
    count = nonfinite_count(raw.image)
    if not count:
        return raw, []
    what = f"{count:,} of {raw.image.size:,} voxels"
    if not repair:
        sentence = IMAGE_RULES["intensities_finite"].message.format(image=path)
        raise InputRefused("intensities_finite", f"{sentence} ({what}); --repair-nonfinite replaces them by the "
                                                 "channel's finite median and labels it anyway")
    log(f"WARNING {path} holds NaN or infinite intensities ({what}); each replaced by its channel's finite "
        "median (--repair-nonfinite)")
    return replace(raw, image=repair_nonfinite(path, raw.image)), [f"{count:,} non-finite voxels repaired"]


# -- far from the training data ------------------------------------------------------------------------


def constant_channels(image: np.ndarray) -> list[tuple[int, float]]:
    """(channel, value) for each channel that holds one value in at least 99 % of its voxels
    (on a strided sample of about STATISTICS_SAMPLE voxels: cheap on large volumes)."""
    found = []
    for index, channel in enumerate(image):
        flat = channel.reshape(-1)
        low, high = np.percentile(flat[:: max(1, flat.size // STATISTICS_SAMPLE)], [0.5, 99.5])
        if high - low <= CONSTANT_SPREAD * max(1.0, abs(low), abs(high)):
            found.append((index, float(low)))
    return found


def _axes(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def outside_training(what: str, values: Sequence[float], bounds: dict | None) -> str | None:
    """Why `values` (per axis) are far outside the training cases' [min, max], or None."""
    if not bounds or len(bounds.get("min", ())) != len(values):
        return None
    low, high = bounds["min"], bounds["max"]
    if all(lo / FAR_FROM_TRAINING <= v <= hi * FAR_FROM_TRAINING for v, lo, hi in zip(values, low, high)):
        return None
    return (f"its {what} {_axes(values)} is far outside the training cases' ({_axes(low)} to {_axes(high)}; "
            f"flagged below 1/{FAR_FROM_TRAINING:g} of the smallest or above {FAR_FROM_TRAINING:g}x the largest)")


def distribution_findings(raw: RawImage, bundle: ModelFile) -> list[str]:
    """Why an input is far from the training data: a constant channel (always checked), shape
    or spacing outside the training ranges (when the model file records them)."""
    found = [f"channel {index} is constant ({value:g} in at least 99% of its voxels); the network only saw "
             "images with contrast" for index, value in constant_channels(raw.image)]
    ranges = bundle.info.get("training_ranges") or {}
    found.append(outside_training("shape", raw.image.shape[1:], ranges.get("shape")))
    found.append(outside_training("spacing", raw.spacing, ranges.get("spacing")))
    return [reason for reason in found if reason]


def flag_out_of_distribution(path: Path, raw: RawImage, bundle: ModelFile, log: Log) -> list[str]:
    """Warn about an input far from the training data; the summary note, if any."""
    reasons = distribution_findings(raw, bundle)
    if not reasons:
        return []
    log(f"WARNING {path} is far out of the training distribution: {'; '.join(reasons)}. It is labelled, "
        "but the labels may be meaningless: check the file and the labels")
    return ["out of distribution"]


# -- labelling and writing ------------------------------------------------------------------------------------


def label_volume(predictor: Predictor, raw: RawImage, options: PredictOptions, log: Log, path: Path) -> np.ndarray:
    """The pipeline's way end to end: the plan's preprocessing, the fold ensemble's averaged
    probabilities (mirror TTA optional), back onto the input grid, then the chosen postprocessing.
    Says on stderr what it is about to run; a long pass shows a progress bar."""
    bundle = predictor.bundle
    volume = prepare_image(raw.image, raw.affine, raw.spacing, bundle.preprocessing, source=path)
    regions, groups = Regions.of(bundle.info.get("regions")), predictor.groups()
    probabilities = None
    for configuration, nets in groups:  # a configuration ensemble: the mean of the configurations' probabilities
        windows = count_windows(volume.image.shape[1:], configuration.patch_size, options.overlap)
        passes = len(nets) * (2 ** len(configuration.patch_size) if options.tta else 1)
        log(f"{path}: shape {_axes(raw.image.shape[1:])}, {windows} window(s) x {passes} pass(es)")
        own = predict_probabilities(nets, volume.image, configuration.patch_size, tta=options.tta,
                                    overlap=options.overlap, progress=windows > PROGRESS_WINDOWS,
                                    sigmoid=regions is not None)
        probabilities = own if probabilities is None else probabilities + own
    probabilities = probabilities / len(groups)
    if volume.original_shape and list(volume.original_shape) != list(probabilities.shape[1:]):
        probabilities = restore_to_shape(probabilities, volume.original_shape)
    labels = to_labels(probabilities, regions)
    return apply_postprocessing(labels, bundle.postprocessing if options.postprocess else None)


def raw_values(labels: np.ndarray, label_map: dict[str, int]) -> np.ndarray:
    """Class indices back to the delivery's raw mask values (inverse of data.label_map)."""
    if not label_map:
        return labels
    inverse = np.arange(256, dtype=np.uint8)
    for raw, target in label_map.items():
        inverse[target] = int(raw)
    return inverse[labels]


def save_planar(dest: Path, labels: np.ndarray) -> None:
    import cv2

    with atomic_path(dest) as tmp:
        ok, encoded = cv2.imencode(".png", labels.astype(np.uint8))
        if not ok:
            raise ValueError(f"{dest}: could not encode the label image")
        tmp.write_bytes(encoded.tobytes())


def save_label(dest: Path, labels: np.ndarray, reference: Path) -> None:
    """Write a uint8 label file in `dest`'s format on the input's grid (segflow.data.images)."""
    with atomic_path(dest) as tmp:
        staged = tmp.with_name(f"{tmp.name}{label_suffix(dest)}")  # the writer picks the format by name
        write_label(staged, labels, reference)
        staged.replace(tmp)


def write_labels(labels: np.ndarray, bundle: ModelFile, job: Job) -> Path:
    """The label file for the job's input: on the input's grid in its format, or a PNG of the
    delivery's raw mask values for a 2D image."""
    if is_planar(job.source):
        save_planar(job.dest, raw_values(labels, bundle.info.get("label_map") or {}))
    else:
        save_label(job.dest, labels, job.source)
    return job.dest


def predict_one(job: Job, predictor: Predictor, options: PredictOptions, log: Log, position: str) -> Outcome:
    """Check, label and write one input; a broken rule refuses it (named on stderr), nothing else.
    Every line it logs starts with `position` ([i/n])."""
    def file_log(message: str) -> None:
        log(f"{position} {message}")

    try:
        raw = read_input(job.files)
        check_fits_network(job.source, raw, predictor.bundle)
        raw, notes = finite_input(job.source, raw, options.repair_nonfinite, file_log)
    except InputRefused as exc:
        file_log(f"refused {job.source} [{exc.rule}]: {exc}")
        return Outcome(job.source, rule=exc.rule, message=str(exc), channel_files=len(job.files))
    labels = label_volume(predictor, raw, options, file_log, job.source)
    notes += flag_out_of_distribution(job.source, raw, predictor.bundle, file_log)
    return Outcome(job.source, write_labels(labels, predictor.bundle, job), notes=notes, channel_files=len(job.files))


def predict_files(model: str, source: Path, output: Path, options: PredictOptions = PredictOptions(),
                  start: Path | None = None, log: Log = to_stderr) -> Iterator[Outcome]:
    """Label every input of `source` into `output`, one Outcome per input (refused ones included).

    The model reference is resolved and the inputs and output planned (PredictRefused) before any
    model or image is read; a model reference that names nothing raises FileNotFoundError or the
    registry's LookupError."""
    jobs = plan_jobs(source, output, options.overwrite)
    model_file = resolve_model(model, start, options.dataset, input_task(jobs))
    predictor = load_predictor(model_file)
    started = time.monotonic()
    for index, job in enumerate(jobs, 1):
        yield predict_one(job, predictor, options, log, f"[{index}/{len(jobs)}]")
        if index < len(jobs):
            log(eta_line(index, len(jobs), time.monotonic() - started))


def eta_line(done: int, total: int, seconds: float) -> str:
    """`[2/10] done; ETA 01:20 for the 8 left` from the pace so far (tqdm's time format, as the bars)."""
    from tqdm import tqdm

    left = total - done
    return f"[{done}/{total}] done; ETA {tqdm.format_interval(seconds / done * left)} for the {left} left"


def summary_lines(outcomes: list[Outcome]) -> list[str]:
    """A count line, then one line per input: written (with its flags) or refused (with the rule)."""
    written = [o for o in outcomes if o.dest is not None]
    flagged = [o for o in written if o.notes]
    head = f"predict: {len(written)} written, {len(outcomes) - len(written)} refused"
    lines = [head + (f", {len(flagged)} flagged" if flagged else "")]
    for o in outcomes:
        if o.dest is None:
            lines.append(f"  refused  {o.shown}  [{o.rule}]")
        else:
            lines.append(f"  written  {o.shown} -> {o.dest}" + (f"  [{'; '.join(o.notes)}]" if o.notes else ""))
    return lines


def batch_exit_code(outcomes: list[Outcome]) -> int:
    """0 when every input was labelled, 1 when any was refused."""
    return 1 if any(o.dest is None for o in outcomes) else 0
