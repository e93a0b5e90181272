"""params.yaml -> typed Params: the repo's file loads; every bad value is a ConfigError naming file and key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from segflow.config import AugmentConfig, ConfigError, ModelConfig, load_params

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return yaml.safe_load(REPO_PARAMS.read_text())


def write_params(folder: Path, raw: object) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def load_error(tmp_path: Path, raw_params: dict, section: str | None, key: str | None, value=None) -> str:
    """Load params with one key of `section` set to `value` (None key: drop the section); return the error."""
    raw = copy.deepcopy(raw_params)
    if key is None:
        del raw[section]
    else:
        raw[section][key] = value
    path = write_params(tmp_path, raw)
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    return str(caught.value)


def test_repo_params_load_with_the_values_in_the_file(raw_params):
    params = load_params(REPO_PARAMS)
    assert params.train.lr == raw_params["train"]["lr"]
    assert params.split.n_folds == raw_params["split"]["n_folds"]
    assert params.preprocess.patch_size == raw_params["preprocess"]["patch_size"]
    assert params.split.folds == raw_params["split"]["folds"]


def test_validate_and_register_sections_are_reachable_with_trailing_underscore(raw_params):
    params = load_params(REPO_PARAMS)
    assert params.validate_.min_cases == raw_params["validate"]["min_cases"]
    assert params.validate_.foreground_labels == raw_params["validate"]["foreground_labels"]
    assert params.register_.min_mean_dice == raw_params["register"]["min_mean_dice"]


@pytest.mark.parametrize(
    ("section", "key", "value", "dotted"),
    [
        ("train", "lr", -0.1, "train.lr"),
        ("train", "epochs", 0, "train.epochs"),
        ("train", "learning_rate", 0.1, "train.learning_rate"),  # unknown key
        ("augment", "flip_prob", 1.5, "augment.flip_prob"),
        ("validate", "min_cases", 0, "validate.min_cases"),
        ("register", "min_mean_dice", 2.0, "register.min_mean_dice"),
        ("data", "md5", "not-an-md5", "data.md5"),
        ("split", "shuffle", True, "split.shuffle"),  # unknown key
    ],
)
def test_bad_value_names_file_and_dotted_key(tmp_path, raw_params, section, key, value, dotted):
    message = load_error(tmp_path, raw_params, section, key, value)
    assert str(tmp_path / "params.yaml") in message
    assert dotted in message
    assert repr(value) in message  # the offending value is shown


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train", "batch_size", 0),
        ("train", "batch_size", -4),
        ("train", "val_every", 0),
        ("train", "nproc_per_node", 0),
        ("train", "memory_budget_gb", 0),
        ("train", "memory_budget_gb", float("inf")),  # passes `> 0`, means nothing
        ("train", "lr", float("nan")),
        ("preprocess", "patch_size", [0, 56, 40]),
        ("preprocess", "target_spacing", [1.0, 0.0, 1.0]),
        ("preprocess", "target_spacing", [1.0, float("inf"), 1.0]),
        ("augment", "gamma_range", [0.0, 1.5]),  # x ** 0 is 1 everywhere
        ("augment", "brightness_range", [0.0, 1.25]),
        ("augment", "contrast_range", [1.25, 0.75]),
        ("split", "seed", -1),
        ("evaluate", "sw_batch_size", 0),
        ("data", "archive_max_bytes", 0),
        ("data", "archive_max_ratio", 0.5),
    ],
)
def test_numbers_out_of_their_range_are_refused_naming_file_and_key(tmp_path, raw_params, section, key, value):
    message = load_error(tmp_path, raw_params, section, key, value)
    assert str(tmp_path / "params.yaml") in message
    assert f"{section}.{key}" in message


def test_a_negative_top_level_seed_is_refused(tmp_path, raw_params):
    raw = copy.deepcopy(raw_params)
    raw["seed"] = -1
    with pytest.raises(ConfigError, match="seed") as caught:
        load_params(write_params(tmp_path, raw))
    assert str(tmp_path / "params.yaml") in str(caught.value)


def test_union_branches_do_not_clutter_the_key(tmp_path, raw_params):
    """`train.batch_size: 0` is named as such, not as `train.batch_size.constrained-int`."""
    message = load_error(tmp_path, raw_params, "train", "batch_size", 0)
    assert "constrained-int" not in message and "literal" not in message


def test_target_spacing_axes_must_match_spatial_dims(tmp_path, raw_params):
    message = load_error(tmp_path, raw_params, "preprocess", "target_spacing", [1.0, 1.0])
    assert "preprocess.target_spacing" in message and "model.spatial_dims" in message


def test_archive_limits_default_to_64_gib_and_ratio_200(raw_params):
    data = load_params(REPO_PARAMS).data
    assert (data.archive_max_bytes, data.archive_max_ratio) == (64 * 2**30, 200)


def test_fold_outside_n_folds_is_refused_naming_split_folds(tmp_path, raw_params):
    message = load_error(tmp_path, raw_params, "split", "folds", [0, raw_params["split"]["n_folds"]])
    assert str(tmp_path / "params.yaml") in message
    assert "split.folds" in message and "n_folds" in message


def test_a_fold_listed_twice_is_refused(tmp_path, raw_params):
    assert "twice" in load_error(tmp_path, raw_params, "split", "folds", [1, 1])


def test_fold_all_is_a_fold_beside_numbered_ones(tmp_path, raw_params):
    raw = copy.deepcopy(raw_params)
    raw["split"]["folds"] = [0, "all"]
    split = load_params(write_params(tmp_path, raw)).split
    assert split.folds == [0, "all"] and split.held_out == [0]


def test_fold_all_alone_is_refused_saying_nothing_could_evaluate_it(tmp_path, raw_params):
    message = load_error(tmp_path, raw_params, "split", "folds", ["all"])
    assert "fold all holds no case out" in message and "[0, all]" in message


def test_auto_values_are_listed_until_resolved(tmp_path, raw_params):
    raw = copy.deepcopy(raw_params)
    raw["preprocess"]["patch_size"], raw["train"]["batch_size"], raw["model"]["channels"] = "auto", "auto", "auto"
    params = load_params(write_params(tmp_path, raw))
    assert {"preprocess.patch_size", "train.batch_size", "model.channels"} <= set(params.unresolved())


def test_auto_is_the_only_word_a_number_field_takes(tmp_path, raw_params):
    assert "train.batch_size" in load_error(tmp_path, raw_params, "train", "batch_size", "big")


def test_with_fold_narrows_split_folds(tmp_path, raw_params):
    params = load_params(write_params(tmp_path, raw_params))
    assert params.with_fold(3).split.folds == [3]


def test_patch_size_length_must_match_spatial_dims(tmp_path, raw_params):
    message = load_error(tmp_path, raw_params, "preprocess", "patch_size", [40, 56])
    assert str(tmp_path / "params.yaml") in message
    assert "preprocess.patch_size" in message and "model.spatial_dims" in message


def test_2d_patch_with_2d_model_loads(tmp_path, raw_params):
    raw = copy.deepcopy(raw_params)
    raw["preprocess"]["patch_size"] = [64, 64]
    raw["model"]["spatial_dims"] = 2
    raw["model"]["strides"] = [2, 2, 2]
    assert load_params(write_params(tmp_path, raw)).preprocess.patch_size == [64, 64]


@pytest.mark.parametrize("section", ["train", "validate", "register", "split"])
def test_missing_section_is_named(tmp_path, raw_params, section):
    message = load_error(tmp_path, raw_params, section, None)
    assert str(tmp_path / "params.yaml") in message
    assert f"{section}: Field required" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_non_mapping_yaml_is_refused(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping") as caught:
        load_params(path)
    assert str(path) in str(caught.value)


def test_invalid_yaml_is_refused_with_file_name(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: {lr: 0.1\nsplit: [\n")
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_params(path)
    assert str(path) in str(caught.value)


def test_missing_file_is_refused_with_file_name(tmp_path):
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_params(path)
    assert str(path) in str(caught.value)


def test_network_args_drop_name_and_keep_extra_monai_keys():
    model = ModelConfig(name="UNet", spatial_dims=3, out_channels=3, channels=[8, 16], strides=[2], dropout=0.1)
    args = model.network_args()
    assert "name" not in args
    assert args["channels"] == [8, 16] and args["strides"] == [2] and args["dropout"] == 0.1
    assert args["spatial_dims"] == 3 and args["in_channels"] == "auto" and args["out_channels"] == 3


def test_repo_model_section_gives_unet_arguments():
    args = load_params(REPO_PARAMS).model.network_args()
    assert "name" not in args
    assert args["num_res_units"] == 2 and args["norm"] == "instance"


def test_keys_from_before_the_preprocess_section_still_load_with_a_warning(tmp_path, raw_params):
    """augment.patch_size/target_spacing/normalisation moved to preprocess: read for one release."""
    raw = copy.deepcopy(raw_params)
    moved = raw.pop("preprocess")
    raw["augment"].update(patch_size=[40, 56, 40], target_spacing=moved["target_spacing"])
    with pytest.warns(FutureWarning, match=r"augment.patch_size is deprecated.*move it to preprocess.patch_size"):
        params = load_params(write_params(tmp_path, raw))
    assert params.preprocess.patch_size == [40, 56, 40] and params.preprocess.normalisation == "auto"
    assert "patch_size" not in AugmentConfig.model_fields


def test_a_moved_key_set_in_both_places_is_refused(tmp_path, raw_params):
    raw = copy.deepcopy(raw_params)
    raw["augment"]["patch_size"] = [40, 56, 40]
    with pytest.raises(ConfigError, match="augment.patch_size moved to preprocess.patch_size; set it there only"):
        load_params(write_params(tmp_path, raw))


def test_autos_the_plan_does_not_fill_are_not_unresolved():
    """data.layout is detected by ingest and train.iterations_per_epoch by the trainer: neither
    waits for the plan, and resolving params with a plan leaves them auto."""
    unresolved = load_params(REPO_PARAMS).unresolved()
    assert "data.layout" not in unresolved and "train.iterations_per_epoch" not in unresolved
    assert {"model.in_channels", "model.out_channels"} <= set(unresolved)
