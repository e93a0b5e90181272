"""Export a segflow model file as a MONAI bundle with TorchScript and ONNX copies, each checked.

What the copies compute: `MemberAverage`, the fold members' softmax probabilities averaged, on one
preprocessed window: exactly what `segflow.inference.sliding_window` gives for an image of the patch size. The
bundle's `inferer` (Gaussian-weighted sliding windows on the patch size) stitches these averaged
probabilities, while segflow stitches each member's logits and applies softmax after, so on larger
images the two differ slightly where windows overlap. Segflow's preprocessing (resampling,
normalisation) and postprocessing are described in metadata.json, not part of the exported graph.

Decisions (measured with torch 2.13, MONAI 1.6.1, onnxruntime 1.31 on every network in
`factory.NETWORKS`, 2D and 3D; all eight export to both formats within 1e-5 of eager):

- Networks are built from MONAI's classes as `monai.bundle.ConfigParser` builds them, without the
  forward hook `factory.build_network` gives BasicUNetPlusPlus: `MemberAverage` takes the last of a
  list output itself, so the bundle needs no hook and TorchScript need not compile one.
- TorchScript: `torch.jit.script` first, because a scripted module keeps the network's Python
  branches and takes any batch and window size the network takes (UNet, AttentionUnet, BasicUNet,
  BasicUNetPlusPlus, DynUNet, SegResNet, UNETR). SwinUNETR (keyword-only arguments) and DynUNet
  with deep supervision do not script, so they are traced in eval mode on a window of the patch
  size: a trace records the path for that shape, the one the sliding-window inferer always feeds.
  The parity check runs another batch size than the trace saw, so a trace that baked the batch in
  is caught, never published. Saved with MONAI's `save_net_with_metadata`, which embeds
  metadata.json (and inference.json) as extra files, as the MONAI bundle specification asks.
- ONNX: torch's TorchScript-based exporter (`dynamo=False`), opset 18 (onnxruntime >= 1.14,
  TensorRT >= 8.6), batch and spatial axes dynamic. torch's default torch.export-based exporter
  fails on UNETR, takes 5-90 s per tiny network here against 0.3-4 s, and needs onnxscript.
  Spatial axes are truly free only for the convolutional networks; UNETR/SwinUNETR take the patch.
- torch 2.13 marks torch.jit and the TorchScript-based ONNX exporter deprecated (both work, their
  warnings are silenced here); revisit when torch is upgraded past the pin.
- A network or format that cannot be exported raises `ExportError` naming both; nothing is
  published unless every copy matches the eager segflow model within `atol`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from segflow.data.preprocess import describe_preprocessing
from segflow.errors import SegflowError
from segflow.files import file_hash, owner_tag, remove_abandoned, write_json
from segflow.models.factory import NETWORKS, SLICE_AXIS
from segflow.models.model_file import ModelFile, load_model_file

FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 18
METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
WEIGHTS = "models/model.pt"
FORMAT_FILES = {"torchscript": "models/model.ts", "onnx": "models/model.onnx"}
PARITY_SEED = 0
PARITY_BATCH = 2  # the export example has batch 1: checking at 2 proves the batch axis is free
SLIDING_WINDOW = {"overlap": 0.5, "mode": "gaussian", "sw_batch_size": 4}  # as segflow.inference.sliding_window
PUBLISH_TRIES = 50  # renames of a replacing publish before giving up on concurrent publishers


class ExportError(SegflowError):
    """A model could not be exported, or an exported copy does not match the eager model."""


class MemberAverage(torch.nn.Module):
    """Class probabilities (B, C, *spatial): the mean over fold members of softmax(logits).

    Built from a list of networks, so `ConfigParser` can instantiate it from
    `{"_target_": "segflow.models.export.MemberAverage", "networks": [{"_target_": ...}, ...]}`.
    """

    def __init__(self, networks: Sequence[torch.nn.Module]):
        super().__init__()
        if len(networks) == 0:
            raise ValueError("MemberAverage needs at least one network")
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities: list[torch.Tensor] = []
        for network in self.networks:
            output = network(x)
            # MONAI's BasicUNetPlusPlus returns its heads as a list, the main one last.
            logits = output[-1] if isinstance(output, list) else output
            probabilities.append(torch.softmax(logits, dim=1))
        return torch.stack(probabilities).mean(dim=0)


def export_model(model_file: Path, dest: Path, formats: Sequence[str] = FORMATS, atol: float = 1e-4) -> dict:
    """Write the MONAI bundle for `model_file` at `dest`, all or nothing.

    Built in a hidden sibling folder, checked against the eager model (`check_parity`), then
    renamed into place, so `dest` either does not exist or holds a complete, matching export.
    Returns what was written: files relative to `dest`, formats, parity (max abs difference).
    """
    model_file, dest = Path(model_file), Path(dest)
    formats = check_formats(formats)
    if dest.exists():
        raise ExportError(f"{dest}: already exists; remove it or choose another export folder")
    bundle = read_model(model_file)
    with staging_folder(dest) as staging:
        written = write_bundle(bundle, model_file, staging, formats)
        parity = check_parity(staging, model_file, atol=atol)
        publish(staging, dest)
    return {"formats": list(formats), "files": written["files"], "parity": parity,
            "torchscript": written.get("torchscript"), "onnx_opset": ONNX_OPSET if "onnx" in formats else None,
            "atol": atol, "source_sha256": written["sha256"]}


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The requested formats in a fixed order; an unknown one is refused by name."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(f"export format(s) {unknown} not supported; choose from {list(FORMATS)}")
    return tuple(f for f in FORMATS if f in formats)


def read_model(model_file: Path) -> ModelFile:
    """The segflow model file, with load errors as ExportError (the register stage reports them)."""
    try:
        bundle = load_model_file(model_file)
    except (ValueError, FileNotFoundError) as exc:
        raise ExportError(str(exc)) from None
    if bundle.network not in NETWORKS:
        raise ExportError(f"{model_file}: network {bundle.network!r} cannot be exported; "
                          f"known networks: {sorted(NETWORKS)}")
    # A MONAI bundle's network_def names one MONAI class: a slice-wise 2d network or an ensemble of
    # configurations is none, and an export of part of it would predict something else.
    if bundle.companions or bundle.network_args.get(SLICE_AXIS) is not None:
        what = "an ensemble of configurations" if bundle.companions else "a 2d slice-wise configuration"
        raise ExportError(f"{model_file}: {what} is not exported (a MONAI bundle holds one MONAI network); "
                          "segflow predict runs the model file itself")
    return bundle


@contextlib.contextmanager
def staging_folder(dest: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `dest` named for its owner (`-<pid>@<host>`), removed unless the
    block renamed it into place. Folders a killed run left beside `dest` are removed first."""

    dest.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("staging", "old"):
        remove_abandoned(dest.parent, f".{dest.name}.{kind}-*")
    staging = dest.with_name(f".{dest.name}.staging-{uuid.uuid4().hex[:8]}-{owner_tag()}")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, dest: Path, replace: bool = False) -> None:
    """Put `staging` at `dest` in one rename: readers see no export or a complete one. With `replace`
    an existing `dest` is first renamed aside (then removed), retried while concurrent publishers
    get in between, so the last one wins and every one of them publishes a whole folder."""
    for _ in range(PUBLISH_TRIES if replace else 1):
        aside = _move_aside(dest) if replace else None
        try:
            staging.rename(dest)
            return
        except OSError as exc:  # e.g. something else created `dest` meanwhile
            failure = exc
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # not a concurrent publisher: no retry
                break
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
    raise ExportError(f"{dest}: cannot put the export in place: {failure}")


def _move_aside(dest: Path) -> Path | None:
    """Rename `dest` to a hidden owner-named sibling (None when there is no `dest`)."""

    aside = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}-{owner_tag()}")
    try:
        dest.rename(aside)
    except FileNotFoundError:
        return None
    return aside


def write_bundle(bundle: ModelFile, model_file: Path, root: Path, formats: Sequence[str]) -> dict:
    """configs/, models/model.pt and the requested formats under `root`."""
    sha256 = file_hash(model_file)
    metadata = bundle_metadata(bundle, model_file.name, sha256)
    inference = inference_config(bundle)
    (root / "models").mkdir(parents=True)
    write_json(root / METADATA, metadata)
    write_json(root / INFERENCE, inference)
    module = exportable_module(bundle, root / INFERENCE)
    torch.save(module.state_dict(), root / WEIGHTS)
    written = {"files": [METADATA, INFERENCE, WEIGHTS], "sha256": sha256}
    example = example_input(bundle, batch=1)
    check_runs(module, example, bundle)
    if "torchscript" in formats:
        written["torchscript"] = save_torchscript(module, example, root / FORMAT_FILES["torchscript"],
                                                  bundle.network, metadata, inference)
        written["files"].append(FORMAT_FILES["torchscript"])
    if "onnx" in formats:
        save_onnx(module, example, root / FORMAT_FILES["onnx"], bundle.network, metadata)
        written["files"].append(FORMAT_FILES["onnx"])
    return written


def network_config(bundle: ModelFile) -> dict:
    """`network_def`: MemberAverage over one MONAI network config per member."""
    member = {"_target_": NETWORKS[bundle.network], **json.loads(json.dumps(bundle.network_args))}
    return {"_target_": f"{__name__}.MemberAverage", "networks": [dict(member) for _ in bundle.state_dicts]}


def inference_config(bundle: ModelFile) -> dict:
    """configs/inference.json: the network (weights in models/model.pt) and the sliding-window inferer."""
    return {
        "imports": ["$import torch", f"$import {__name__}"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "checkpoint": "$@bundle_root + '/" + WEIGHTS + "'",
        "network_def": network_config(bundle),
        "network": "$@network_def.to(@device)",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "inferer": {"_target_": "monai.inferers.SlidingWindowInferer", "roi_size": list(bundle.patch_size),
                    **SLIDING_WINDOW},
        "segflow_preprocessing": "Not MONAI transforms: prepare each image as segflow does before the inferer "
                                 f"({describe_preprocessing(bundle.preprocessing)}); see metadata.json.",
    }


def exportable_module(bundle: ModelFile, inference_file: Path) -> MemberAverage:
    """The bundle's own `network_def` (through ConfigParser) with the members' weights, eval mode."""
    try:
        module = instantiate_network_def(inference_file)
        for network, state in zip(module.networks, bundle.state_dicts, strict=True):
            network.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any failure here means this network cannot be bundled
        raise ExportError(f"{bundle.network}: cannot be built as a MONAI bundle network_def: "
                          f"{first_line(exc)}") from exc
    return module.eval()


def instantiate_network_def(inference_file: Path) -> torch.nn.Module:
    """`network_def` of a bundle's inference.json, instantiated by MONAI's ConfigParser."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(inference_file))
    return parser.get_parsed_content("network_def", instantiate=True)


def example_input(bundle: ModelFile, batch: int) -> torch.Tensor:
    """A seeded random window of the patch size: what the sliding-window inferer feeds."""
    channels = bundle.network_args.get("in_channels", 1)
    generator = torch.Generator().manual_seed(PARITY_SEED)
    return torch.randn(batch, channels, *bundle.patch_size, generator=generator)


def check_runs(module: MemberAverage, example: torch.Tensor, bundle: ModelFile) -> None:
    """Refuse early, and say why, when the network cannot take a window of its own patch size."""
    try:
        with torch.no_grad():
            module(example)
    except Exception as exc:  # noqa: BLE001 - a network raises anything on a shape it cannot take
        raise ExportError(f"{bundle.network}: does not run on a window of its patch size {list(bundle.patch_size)}, "
                          f"so no format can be exported: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@contextlib.contextmanager
def exporting(network: str, fmt: str) -> Iterator[None]:
    """Turn whatever torch raises deep inside an exporter into one ExportError naming both."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and exporter deprecation chatter
            yield
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporters raise anything
        raise ExportError(f"{network}: cannot be exported to {fmt}: {first_line(exc)}") from exc


def to_torchscript(module: MemberAverage, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, str]:
    """Scripted when the network scripts (shape-generic), else traced on `example` (see module doc)."""
    try:
        return torch.jit.script(module), "scripted"
    except Exception:  # noqa: BLE001 - torch.jit.script raises many kinds for unsupported code
        return torch.jit.trace(module, example, check_trace=False), "traced"


def save_torchscript(module: MemberAverage, example: torch.Tensor, path: Path, network: str,
                     metadata: dict, inference: dict) -> str:
    """models/model.ts with metadata.json and inference.json embedded; returns scripted/traced."""
    from monai.data import save_net_with_metadata

    with exporting(network, "torchscript"):
        ts_module, how = to_torchscript(module, example)
        save_net_with_metadata(ts_module, str(path), include_config_vals=False, meta_values=metadata,
                               more_extra_files={"inference.json": json.dumps(inference).encode()})
    return how


def save_onnx(module: MemberAverage, example: torch.Tensor, path: Path, network: str, metadata: dict) -> None:
    """models/model.onnx (opset ONNX_OPSET, dynamic batch/spatial axes), metadata.json as a model prop."""
    import onnx

    axes = {0: "batch", **{2 + i: f"spatial_{i}" for i in range(example.ndim - 2)}}
    with exporting(network, "onnx"):
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["pred"],
                          dynamic_axes={"image": axes, "pred": axes})
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, {"monai_bundle_metadata": json.dumps(metadata)})
        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def bundle_metadata(bundle: ModelFile, source_name: str, sha256: str) -> dict:
    """configs/metadata.json: MONAI bundle metadata plus what segflow needs to use the model."""
    import monai
    import numpy

    classes = ", ".join(f"{k}: {v}" for k, v in bundle.labels.items())
    return {
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by segflow from {source_name} (sha256 {sha256[:12]})"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"segflow": segflow_version()},
        "task": f"{len(bundle.labels)}-class segmentation ({classes})",
        "description": description(bundle),
        "authors": "segflow pipeline", "copyright": "see the dataset and project licences",
        "intended_use": "Research only; not a medical device.",
        "label_classes": classes, "pred_classes": f"{len(bundle.labels)} channels of class probabilities",
        "labels": dict(bundle.labels),
        "network_data_format": {"inputs": {"image": input_format(bundle)},
                                "outputs": {"pred": output_format(bundle)}},
        "preprocessing": bundle.preprocessing, "postprocessing": bundle.postprocessing,
        "source_model": {"file": source_name, "sha256": sha256},
        "segflow": {"network": bundle.network, "network_args": bundle.network_args, "folds": list(bundle.folds),
                    "members": len(bundle.state_dicts), "label_map": bundle.info.get("label_map") or {}},
    }


def description(bundle: ModelFile) -> str:
    return (f"MONAI {bundle.network}, {len(bundle.state_dicts)} cross-validation fold member(s) averaged "
            "(softmax probabilities), exported by segflow. The network sees one window of the patch size; "
            "models/model.ts and models/model.onnx compute the same. Preprocessing lives in segflow, not in "
            f"MONAI transforms: {describe_preprocessing(bundle.preprocessing)} before sliding-window "
            "inference (configs/inference.json `inferer`); the label is the argmax of the probabilities, then "
            "segflow's postprocessing (metadata `postprocessing`).")


def input_format(bundle: ModelFile) -> dict:
    channels = bundle.network_args.get("in_channels", 1)
    modality = bundle.info.get("modality") or {}
    return {"type": "image", "format": "magnitude", "modality": modality.get("0", "n/a"),
            "num_channels": channels, "spatial_shape": list(bundle.patch_size), "dtype": "float32",
            "value_range": [],  # normalised intensities: unbounded (MONAI's "[] if not known")
            "is_patch_data": True, "channel_def": {str(i): modality.get(str(i), "image") for i in range(channels)}}


def output_format(bundle: ModelFile) -> dict:
    return {"type": "probabilities", "format": "segmentation", "num_channels": len(bundle.labels),
            "spatial_shape": list(bundle.patch_size), "dtype": "float32", "value_range": [0, 1],
            "is_patch_data": True, "channel_def": dict(bundle.labels)}


def segflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segflow")
    except PackageNotFoundError:
        return "unknown"


def check_parity(dest: Path, model_file: Path, atol: float = 1e-4, shape: Sequence[int] | None = None
                 ) -> dict[str, float]:
    """Max abs difference from the eager segflow model of every copy at `dest` on one seeded input.

    Eager: the members as `segflow predict` builds them. Compared: models/model.ts (torch.jit.load),
    models/model.onnx (onnxruntime CPU) where present, and the bundle itself (network_def through
    ConfigParser + models/model.pt with weights_only=True). Raises ExportError above `atol`.
    """
    dest, model_file = Path(dest), Path(model_file)
    bundle = read_model(model_file)
    image = parity_input(bundle, shape)
    expected = run_copy(model_file, lambda _path, x: MemberAverage(bundle.build()).eval()(x), image)  # as predict
    differences = {}
    for name, (relative, run) in copies_to_check(dest).items():
        actual = run_copy(dest / relative, run, image)
        differences[name] = max_difference(dest / relative, expected, actual)
        if not differences[name] <= atol:  # also catches NaN
            raise ExportError(f"{dest / relative}: differs from the eager model {model_file} by "
                              f"{differences[name]:.2e} (max abs, input {list(image.shape)}), above {atol:g}")
    return differences


def parity_input(bundle: ModelFile, shape: Sequence[int] | None) -> torch.Tensor:
    if shape is None:
        return example_input(bundle, batch=PARITY_BATCH)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(PARITY_SEED))


def copies_to_check(dest: Path) -> dict:
    """name -> (file relative to dest, runner) for each copy present at `dest`."""
    copies = {"bundle": (WEIGHTS, run_bundle)}
    if (dest / FORMAT_FILES["torchscript"]).is_file():
        copies["torchscript"] = (FORMAT_FILES["torchscript"], run_torchscript)
    if (dest / FORMAT_FILES["onnx"]).is_file():
        copies["onnx"] = (FORMAT_FILES["onnx"], run_onnx)
    return copies


def run_copy(path: Path, run, image: torch.Tensor) -> torch.Tensor:
    """One copy's output, a failure to load or run it as ExportError naming the file."""
    try:
        with torch.no_grad():
            return torch.as_tensor(run(path, image))
    except Exception as exc:  # noqa: BLE001 - torch.jit / onnxruntime / ConfigParser raise anything
        raise ExportError(f"{path}: cannot be run on a {list(image.shape)} input: {first_line(exc)}") from exc


def max_difference(path: Path, expected: torch.Tensor, actual: torch.Tensor) -> float:
    if actual.shape != expected.shape:
        raise ExportError(f"{path}: output shape {list(actual.shape)}, the eager model gives {list(expected.shape)}")
    return float((actual.float() - expected).abs().max())


def run_bundle(weights: Path, image: torch.Tensor) -> torch.Tensor:
    root = weights.parents[1]
    module = instantiate_network_def(root / INFERENCE)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module.eval()(image)


def run_torchscript(path: Path, image: torch.Tensor) -> torch.Tensor:
    return torch.jit.load(str(path), map_location="cpu").eval()(image)


def run_onnx(path: Path, image: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["pred"], {"image": image.numpy()})[0])
