"""Model bundle: a saved model loads back into the same network; anything else is refused clearly."""

from __future__ import annotations

import os

import pytest
import torch

from segflow.models.factory import build_network
from segflow.models.model_file import ModelFile, ensemble, load_model_file, save_model_file

ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)


@pytest.fixture
def bundle() -> ModelFile:
    torch.manual_seed(0)
    net = build_network("UNet", ARGS)
    return ModelFile(network="UNet", network_args=ARGS, patch_size=[16, 16, 16],
                       labels={"0": "background", "1": "Anterior", "2": "Posterior"},
                       state_dicts=[net.state_dict()], info={"epochs": 3})


def test_round_trip_builds_a_network_with_the_same_outputs(tmp_path, bundle):
    path = tmp_path / "model.pt"
    save_model_file(path, bundle)
    loaded = load_model_file(path)

    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = bundle.build()[0](x)
        actual = loaded.build()[0](x)
    assert torch.equal(expected, actual)
    assert loaded.patch_size == [16, 16, 16]
    assert loaded.labels == bundle.labels and loaded.info == {"epochs": 3}
    assert not loaded.build()[0].training
    assert os.listdir(tmp_path) == ["model.pt"], "temporary file left beside the model"


def test_plain_torch_dict_is_refused_naming_the_path(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="weights.pt.*not a segflow model"):
        load_model_file(path)


def test_random_bytes_are_refused_naming_the_path(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="garbage.pt.*not a readable segflow model"):
        load_model_file(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_model_file(tmp_path / "nowhere.pt")


def test_ensemble_keeps_every_member_and_its_fold(tmp_path, bundle):
    torch.manual_seed(1)
    other = ModelFile(**{**bundle.__dict__, "state_dicts": [build_network("UNet", ARGS).state_dict()],
                           "folds": [1]})
    path = tmp_path / "ensemble.pt"
    save_model_file(path, ensemble([bundle, other], postprocessing={"keep_largest_component": [1]}))
    loaded = load_model_file(path)
    assert loaded.folds == [0, 1] and len(loaded.build()) == 2
    assert loaded.postprocessing == {"keep_largest_component": [1]}


def test_ensemble_of_different_networks_is_refused(bundle):
    other = ModelFile(**{**bundle.__dict__, "network_args": {**ARGS, "channels": [8, 16]}})
    with pytest.raises(ValueError, match="same network"):
        ensemble([bundle, other])


def test_version_1_model_files_still_load(tmp_path, bundle):
    path = tmp_path / "old.pt"
    torch.save({"format": "segflow-model/1", "network": "UNet", "network_args": ARGS, "patch_size": [16, 16, 16],
                "labels": bundle.labels, "normalisation": "zscore-per-case", "info": {"fold": 2},
                "state_dict": bundle.state_dicts[0]}, path)
    loaded = load_model_file(path)
    assert loaded.folds == [2] and len(loaded.state_dicts) == 1 and loaded.preprocessing is None


# Hostile model files (issue 14): each is refused with a sentence saying what the file is, and
# never with torch's advice to retry with weights_only=False (which would run pickled code).


def _text(path, bundle):
    path.write_text("name: my model\nweights: somewhere\n")


def _truncated_save(path, bundle):
    save_model_file(path, bundle)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _code_reference(path, bundle):
    torch.save({"format": "segflow-model/2", "payload": os.system}, path)


def _plain_pickle(path, bundle):
    import pickle

    path.write_bytes(pickle.dumps({"format": "segflow-model/2"}))


def _foreign_zip(path, bundle):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/readme.txt", "not torch")


HOSTILE_MODELS = {
    "text file": (_text, "is a text file ('name: my model'"),
    "truncated torch save": (_truncated_save, "zip archive cut short"),
    "pickled reference to code": (_code_reference, "reference to the Python object posix.system"),
    "plain pickle": (_plain_pickle, "plain Python pickle, not a torch save"),
    "zip that is no torch save": (_foreign_zip, "zip archive that is not a torch save"),
    "empty file": (lambda path, bundle: path.write_bytes(b""), "is empty (0 bytes)"),
}


@pytest.mark.parametrize("case", HOSTILE_MODELS)
def test_a_hostile_model_file_is_described_never_with_unsafe_advice(tmp_path, bundle, case):
    make, says = HOSTILE_MODELS[case]
    path = tmp_path / "model.pt"
    make(path, bundle)
    with pytest.raises(ValueError) as refused:
        load_model_file(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a readable segflow model file")
    assert says in message
    assert "weights_only" not in message and "(101)" not in message


def test_weights_that_do_not_fit_the_network_are_a_value_error(tmp_path, bundle):
    path = tmp_path / "model.pt"
    save_model_file(path, ModelFile(**{**bundle.__dict__, "network_args": {**ARGS, "channels": [8, 16]}}))
    with pytest.raises(ValueError, match="weights of member 0 do not fit the UNet"):
        load_model_file(path).build()


def test_a_segflow_payload_with_unknown_fields_is_refused_naming_them(tmp_path, bundle):
    path = tmp_path / "model.pt"
    torch.save({"format": "segflow-model/2", "network": "UNet", "surprise": 1}, path)
    with pytest.raises(ValueError, match=r"damaged segflow model file .*'network_args'.*unexpected \['surprise'\]"):
        load_model_file(path)


def test_a_configuration_ensemble_keeps_each_configuration_whole(tmp_path, bundle):
    from segflow.models.model_file import with_companions

    args = dict(bundle.network_args, slice_axis=0)
    other = ModelFile(network=bundle.network, network_args=args, patch_size=[1, 16, 16], labels=bundle.labels,
                      state_dicts=[build_network(bundle.network, args).state_dict()], folds=[0])
    save_model_file(tmp_path / "ensemble.pt", with_companions(bundle, [other]))
    loaded = load_model_file(tmp_path / "ensemble.pt")
    first, second = loaded.configurations()
    assert (first.network_args, first.patch_size, first.companions) == (bundle.network_args, bundle.patch_size, [])
    assert (second.network_args, second.patch_size) == (args, [1, 16, 16])
    assert len(second.build()) == 1


def test_a_file_without_companions_is_written_as_before(tmp_path, bundle):
    save_model_file(tmp_path / "model.pt", bundle)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "companions" not in payload and load_model_file(tmp_path / "model.pt").companions == []
