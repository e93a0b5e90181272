"""Export: a segflow model file becomes a MONAI bundle whose every copy (bundle weights through
ConfigParser, TorchScript, ONNX) computes what segflow computes, or nothing is published."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import assert_same_up_to_float32_order

from segflow.errors import SegflowError
from segflow.inference.sliding_window import predict_probabilities
from segflow.models import export
from segflow.models.export import ExportError, MemberAverage, check_parity, export_model
from segflow.models.factory import build_network
from segflow.models.model_file import ModelFile, load_model_file, save_model_file

# The pipeline's default network (params.yaml model:), narrowed and shallowed for speed.
UNET_3D = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[8, 16, 32], strides=[2, 2],
               num_res_units=2, norm="instance")
UNET_2D = dict(UNET_3D, spatial_dims=2, out_channels=2)
LABELS_3D = {"0": "background", "1": "Anterior", "2": "Posterior"}
LABELS_2D = {"0": "background", "1": "membrane"}
CASES = {  # name: (network args, patch size (not cubic, so swapped axes show), labels, members)
    "3d-1member": (UNET_3D, [16, 24, 16], LABELS_3D, 1),
    "3d-2members": (UNET_3D, [16, 24, 16], LABELS_3D, 2),
    "2d-1member": (UNET_2D, [32, 48], LABELS_2D, 1),
}
PREPROCESSING = {"target_spacing": [1.0, 1.0, 1.0], "normalisation": [{"scheme": "zscore"}]}


def make_model_file(path, args, patch, labels, members, network="UNet", seed=0):
    torch.manual_seed(seed)
    states = [build_network(network, args).state_dict() for _ in range(members)]
    save_model_file(path, ModelFile(network=network, network_args=args, patch_size=patch, labels=labels,
                                  state_dicts=states, folds=list(range(members)), preprocessing=PREPROCESSING,
                                  postprocessing={"keep_largest_component": [1]}))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each case exported once: name -> (model file, dest, export_model's result)."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, (args, patch, labels, members) in CASES.items():
        model_file = make_model_file(root / f"{name}.pt", args, patch, labels, members)
        dest = root / name / "bundle"
        out[name] = (model_file, dest, export_model(model_file, dest))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_every_copy_matches_the_eager_model(exported, case):
    model_file, dest, result = exported[case]
    assert set(result["parity"]) == {"bundle", "torchscript", "onnx"}
    assert all(difference <= 1e-4 for difference in result["parity"].values()), result["parity"]
    assert result["formats"] == ["torchscript", "onnx"] and result["onnx_opset"] == export.ONNX_OPSET
    assert sorted(result["files"]) == sorted(["configs/metadata.json", "configs/inference.json", "models/model.pt",
                                             "models/model.ts", "models/model.onnx"])
    assert all((dest / f).is_file() for f in result["files"])
    assert os.listdir(dest.parent) == ["bundle"], "staging folder left beside the export"
    # Rechecked on a batch and input of another seed than export used.
    again = check_parity(dest, model_file, shape=[3, 1, *CASES[case][1]])
    assert max(again.values()) <= 1e-4


def test_member_average_is_segflow_s_ensemble_probability_on_a_window(exported):
    """The exported function is what `segflow predict` computes on one patch-sized window."""
    model_file, _, _ = exported["3d-2members"]
    nets = load_model_file(model_file).build()
    image = torch.randn(1, 16, 24, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        averaged = MemberAverage(nets)(image[None])[0]
    single = predict_probabilities(nets[:1], image, [16, 24, 16])
    assert_same_up_to_float32_order(averaged, predict_probabilities(nets, image, [16, 24, 16]))
    assert not torch.allclose(averaged, single, atol=1e-3), "second member had no effect"


def test_bundle_instantiates_through_monai_config_parser(exported):
    from monai.bundle import ConfigParser
    from monai.inferers import SlidingWindowInferer

    model_file, dest, _ = exported["3d-2members"]
    parser = ConfigParser()
    parser.read_config(str(dest / "configs" / "inference.json"))
    parser["bundle_root"] = str(dest)
    network = parser.get_parsed_content("network")
    assert isinstance(network, MemberAverage) and len(network.networks) == 2
    assert all(type(n).__module__.startswith("monai.networks.nets") for n in network.networks)
    parser.get_parsed_content("load_weights")  # the config's own weights_only load of models/model.pt
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, SlidingWindowInferer) and list(inferer.roi_size) == [16, 24, 16]
    assert inferer.mode == "gaussian" and inferer.overlap == 0.5
    image = torch.randn(1, 1, 16, 24, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = MemberAverage(load_model_file(model_file).build())(image)
        assert_same_up_to_float32_order(inferer(image, network.eval()), expected)


def test_weights_load_with_weights_only_into_the_member_average(exported):
    _, dest, _ = exported["3d-2members"]
    state = torch.load(dest / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert {key.split(".")[1] for key in state} == {"0", "1"}
    assert all(key.startswith("networks.") for key in state)


def test_metadata_describes_inputs_outputs_and_the_source(exported):
    model_file, dest, result = exported["3d-1member"]
    metadata = json.loads((dest / "configs" / "metadata.json").read_text())
    image = metadata["network_data_format"]["inputs"]["image"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert image | {"value_range": None} == {
        "type": "image", "format": "magnitude", "modality": "n/a", "num_channels": 1, "spatial_shape": [16, 24, 16],
        "dtype": "float32", "value_range": None, "is_patch_data": True, "channel_def": {"0": "image"}}
    assert pred == {"type": "probabilities", "format": "segmentation", "num_channels": 3,
                    "spatial_shape": [16, 24, 16], "dtype": "float32", "value_range": [0, 1],
                    "is_patch_data": True, "channel_def": LABELS_3D}
    assert {"version", "monai_version", "pytorch_version", "numpy_version", "task", "description"} <= set(metadata)
    assert metadata["pytorch_version"] == torch.__version__.split("+")[0]
    assert metadata["preprocessing"] == PREPROCESSING
    assert metadata["postprocessing"] == {"keep_largest_component": [1]}
    from segflow.files import file_hash

    assert metadata["source_model"]["sha256"] == file_hash(model_file) == result["source_sha256"]
    assert "not in MONAI transforms" in metadata["description"]


def test_torchscript_and_onnx_carry_the_metadata(exported):
    import onnx
    from monai.data import load_net_with_metadata

    _, dest, _ = exported["2d-1member"]
    _, meta, extra = load_net_with_metadata(str(dest / "models" / "model.ts"), more_extra_files=("inference.json",))
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 48]
    assert "network_def" in json.loads(extra["inference.json"])
    props = {p.key: p.value for p in onnx.load(str(dest / "models" / "model.onnx")).metadata_props}
    assert json.loads(props["monai_bundle_metadata"])["labels"] == LABELS_2D


def test_onnx_takes_other_batch_and_window_sizes(exported):
    import onnxruntime

    model_file, dest, _ = exported["3d-1member"]
    session = onnxruntime.InferenceSession(str(dest / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    image = torch.randn(2, 1, 24, 32, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = MemberAverage(load_model_file(model_file).build())(image).numpy()
    np.testing.assert_allclose(session.run(["pred"], {"image": image.numpy()})[0], expected, atol=1e-4)


def test_an_existing_destination_is_refused_and_left_alone(exported, tmp_path):
    model_file, _, _ = exported["2d-1member"]
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="bundle: already exists"):
        export_model(model_file, dest)
    assert os.listdir(dest) == ["keep.txt"]


def test_an_exporter_crash_is_an_export_error_and_leaves_nothing(exported, tmp_path, monkeypatch):
    model_file, _, _ = exported["2d-1member"]

    def crash(*args, **kwargs):
        raise RuntimeError("Unsupported: aten::something deep inside torch\nmore lines")

    monkeypatch.setattr(torch.onnx, "export", crash)
    with pytest.raises(ExportError, match=r"UNet: cannot be exported to onnx: RuntimeError: Unsupported") as error:
        export_model(model_file, tmp_path / "bundle")
    assert isinstance(error.value, SegflowError) and "more lines" not in str(error.value)
    assert os.listdir(tmp_path) == []


def test_a_copy_that_does_not_match_is_never_published(exported, tmp_path, monkeypatch):
    model_file, _, _ = exported["2d-1member"]
    build = export.exportable_module

    def off_by_a_little(bundle, inference_file):  # a bug that exports other weights than the model's
        module = build(bundle, inference_file)
        with torch.no_grad():
            next(module.parameters()).add_(0.05)
        return module

    monkeypatch.setattr(export, "exportable_module", off_by_a_little)
    with pytest.raises(ExportError, match=r"model\.pt: differs from the eager model .*2d-1member\.pt by .* above"):
        export_model(model_file, tmp_path / "bundle")
    assert os.listdir(tmp_path) == []


def test_unknown_format_is_refused_by_name(exported, tmp_path):
    model_file, _, _ = exported["2d-1member"]
    with pytest.raises(ExportError, match=r"\['tensorrt'\] not supported"):
        export_model(model_file, tmp_path / "bundle", formats=("onnx", "tensorrt"))
    assert os.listdir(tmp_path) == []


def test_a_network_that_cannot_take_its_patch_is_refused_naming_it(tmp_path):
    args = dict(spatial_dims=2, in_channels=1, out_channels=2, img_size=[32, 32], feature_size=12, hidden_size=48,
                mlp_dim=96, num_heads=4)
    model_file = make_model_file(tmp_path / "unetr.pt", args, [32, 48], LABELS_2D, 1, network="UNETR")
    with pytest.raises(ExportError, match=r"UNETR: does not run on a window of its patch size \[32, 48\]"):
        export_model(model_file, tmp_path / "bundle", formats=("torchscript",))
    assert os.listdir(tmp_path) == ["unetr.pt"]


def test_torchscript_only_export_checks_bundle_and_torchscript(exported, tmp_path):
    model_file, _, _ = exported["2d-1member"]
    result = export_model(model_file, tmp_path / "bundle", formats=["torchscript"])
    assert set(result["parity"]) == {"bundle", "torchscript"} and result["torchscript"] == "scripted"
    assert not (tmp_path / "bundle" / "models" / "model.onnx").exists()


@pytest.mark.parametrize("what", ["slice-wise", "configuration ensemble"])
def test_a_model_a_monai_bundle_cannot_hold_is_refused_not_half_exported(tmp_path, what):
    """A MONAI bundle names one MONAI network: exporting part of a 2d slice-wise model or of an
    ensemble of configurations would predict something else than the model file."""
    from segflow.models.model_file import with_companions

    args = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)
    labels = {"0": "background", "1": "a", "2": "b"}
    sliced = ModelFile(network="UNet", network_args={**args, "slice_axis": 0}, patch_size=[1, 16, 16], labels=labels,
                       state_dicts=[build_network("UNet", {**args, "slice_axis": 0}).state_dict()])
    plain = ModelFile(network="UNet", network_args=args, patch_size=[16, 16, 16], labels=labels,
                      state_dicts=[build_network("UNet", args).state_dict()])
    save_model_file(tmp_path / "model.pt", sliced if what == "slice-wise" else with_companions(plain, [sliced]))
    expected = "a 2d slice-wise configuration" if what == "slice-wise" else "an ensemble of configurations"
    with pytest.raises(ExportError, match=f"{expected} is not exported"):
        export_model(tmp_path / "model.pt", tmp_path / "bundle", formats=("torchscript",))
    assert os.listdir(tmp_path) == ["model.pt"]
