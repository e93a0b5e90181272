"""`segflow compare`: records from folders, the registry, the workspace and DVC revisions; paired
statistics against a baseline; cost, U-Score; table, CSV and PNG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import BIN, REPO, run
from typer.testing import CliRunner

from segflow.config import RegisterConfig
from segflow.models.factory import build_network
from segflow.models.model_file import ModelFile, load_model_file, save_model_file
from segflow.models.profile import profile_bundle
from segflow.reporting import compare as cmp

CASES = [f"hippocampus_{i:03d}" for i in range(30)]
LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}


def per_case(cases=CASES, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """An evaluate-style per-case table; `shift` raises every case's Dice (before noise)."""
    rng = np.random.default_rng(seed)
    dice = np.clip(rng.uniform(0.75, 0.9, size=(len(cases), 2)) + shift, 0, 1)
    return pd.DataFrame({"case_id": cases, "fold": 0, "dice_anterior": dice[:, 0], "dice_posterior": dice[:, 1],
                         "hd95_anterior": rng.uniform(1, 3, len(cases)), "hd95_posterior": np.nan,
                         "dice_anterior_raw": 0.0, "dice_posterior_raw": 0.0})


def tiny_model(path: Path, channels=(4, 8), members: int = 1) -> Path:
    args = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=list(channels), strides=[2], num_res_units=1)
    torch.manual_seed(0)
    states = [build_network("UNet", args).state_dict() for _ in range(members)]
    save_model_file(path, ModelFile(network="UNet", network_args=args, patch_size=[16, 16, 16], labels=LABELS,
                                  state_dicts=states, folds=list(range(members))))
    return path


def write_run(folder: Path, table: pd.DataFrame, model: Path | None = None, metrics: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "per_case.csv", index=False)
    if model:
        shutil.copy2(model, folder / "model.pt")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root (params.yaml, dvc.yaml) with a baseline run and one better by 0.02 Dice."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text("")
    base = per_case()
    write_run(tmp_path / "runs" / "base", base)
    better = base.assign(dice_anterior=base.dice_anterior + 0.02, dice_posterior=base.dice_posterior + 0.02)
    write_run(tmp_path / "runs" / "better", better)
    return tmp_path


@pytest.fixture
def in_process_cost(monkeypatch):
    """Cost measured in this process (the fresh-process path has its own test in test_profile)."""
    import segflow.models.profile as profile

    calls = []

    def measure(path, device="cpu", *args, **kwargs):
        calls.append(Path(path))
        return profile.profile_bundle(profile.load_model_file(Path(path)), device, repeats=2, warmup=1, threads=1)

    monkeypatch.setattr(profile, "profile_model_file", measure)
    return calls


def row(result: cmp.Comparison, name: str) -> pd.Series:
    return result.table.set_index("name").loc[name]


def test_paired_shift_is_found_with_interval_and_wilcoxon(project):
    result = cmp.compare(project, ["runs/base", "runs/better"], cost=False)
    better = row(result, "better")
    assert result.baseline == "base" and bool(row(result, "base").baseline)
    assert better.n_paired == 30 and better.delta_dice == pytest.approx(0.02)
    assert 0 < better.delta_ci_low <= better.delta_ci_high and better.p_wilcoxon < 1e-4
    assert better.dice_ci_low < better.dice_mean < better.dice_ci_high
    assert np.isnan(row(result, "base").delta_dice)


def test_only_cases_both_scored_are_paired(project):
    other = per_case(CASES[5:] + ["extra_1", "extra_2"], seed=1)
    write_run(project / "runs" / "other", other)
    result = cmp.compare(project, ["runs/base", "runs/other"], cost=False)
    assert row(result, "other").n_paired == 25
    assert row(result, "other").n_cases == 27 and row(result, "base").n_cases == 30


def test_fewer_than_five_common_cases_is_refused_naming_both(project):
    write_run(project / "runs" / "elsewhere", per_case(CASES[:4] + [f"new_{i}" for i in range(20)]))
    with pytest.raises(cmp.CompareError, match=r"elsewhere and base share only 4 case.*at least 5 \(register"):
        cmp.compare(project, ["runs/base", "runs/elsewhere"], cost=False)


def test_minimum_of_paired_cases_is_register_min_paired_cases(project):
    """One setting: the project's register.min_paired_cases, or its default without a params.yaml."""
    write_run(project / "runs" / "elsewhere", per_case(CASES[:4] + [f"new_{i}" for i in range(20)]))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["register"]["min_paired_cases"] = 4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert row(cmp.compare(project, ["runs/base", "runs/elsewhere"], cost=False), "elsewhere").n_paired == 4
    (project / "params.yaml").unlink()
    assert cmp.min_paired_cases(project) == RegisterConfig.model_fields["min_paired_cases"].default == 5


def test_baseline_can_be_chosen_and_an_unknown_one_lists_the_records(project):
    result = cmp.compare(project, ["runs/base", "runs/better"], baseline="better", cost=False)
    assert result.baseline == "better" and row(result, "base").delta_dice == pytest.approx(-0.02)
    with pytest.raises(cmp.CompareError, match="'nosuch'.*base, better"):
        cmp.compare(project, ["runs/base", "runs/better"], baseline="nosuch", cost=False)


def test_several_models_get_holm_corrected_p_values(project):
    write_run(project / "runs" / "third", per_case(seed=3))
    result = cmp.compare(project, ["runs/base", "runs/better", "runs/third"], cost=False)
    for name in ("better", "third"):
        assert row(result, name).p_holm >= row(result, name).p_wilcoxon
    assert any("Holm" in note for note in result.notes)
    assert "Holm" in cmp.render_table(result)


def test_table_csv_and_png_are_written(project):
    result = cmp.compare(project, ["runs/base", "runs/better"], cost=False)
    cmp.write_outputs(result, project / "out" / "compare.csv", project / "out" / "compare.png")
    written = pd.read_csv(project / "out" / "compare.csv")
    assert list(written.columns) == cmp.CSV_COLUMNS and list(written.name) == ["base", "better"]
    assert (project / "out" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (project / "out").iterdir()) == ["compare.csv", "compare.png"]
    text = cmp.render_table(result)
    for expected in ("base", "better", "baseline", "+0.0200", "mean Dice [95% CI]", "U-Score"):
        assert expected in text


def test_bad_sources_are_named_with_what_is_missing(project):
    (project / "runs" / "empty").mkdir()
    with pytest.raises(cmp.CompareError, match="empty.*per_case.csv not found"):
        cmp.compare(project, ["runs/base", "runs/empty"], cost=False)
    with pytest.raises(cmp.CompareError, match="'nosuch' is not 'workspace'"):
        cmp.compare(project, ["runs/base", "nosuch"], cost=False)
    write_run(project / "runs" / "nodice", pd.DataFrame({"case_id": ["a"], "hd95_x": [1.0]}))
    with pytest.raises(cmp.CompareError, match="nodice: per-case table needs.*dice_<class>"):
        cmp.compare(project, ["runs/base", "runs/nodice"], cost=False)


def test_device_is_checked_before_any_source_is_read(project):
    with pytest.raises(cmp.CompareError, match="--device must be cpu or cuda"):
        cmp.compare(project, ["nosuch"], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(cmp.CompareError, match="no CUDA device"):
            cmp.compare(project, ["nosuch"], device="cuda")


def register(project: Path, model_id: str, table: pd.DataFrame, champion: bool = True) -> None:
    write_run(project / "registry" / "models" / model_id, table, metrics={"dice_mean": 0.8})
    (project / "registry" / "index.json").write_text(json.dumps(
        {"champion": model_id if champion else None, "models": {model_id: {"status": "champion"}}}))


def test_default_sources_are_champion_and_workspace(project):
    with pytest.raises(cmp.CompareError, match="no sources given.*no champion"):
        cmp.compare(project, [], cost=False)
    register(project, "20260101-000000-abcd", per_case())
    write_run(project / "artifacts" / "evaluate", per_case(shift=0.01))
    result = cmp.compare(project, [], cost=False)
    assert list(result.table.name) == ["champion", "workspace"]
    assert row(result, "champion").source == "registry model 20260101-000000-abcd"
    assert row(result, "workspace").delta_dice == pytest.approx(0.01, abs=1e-9)
    same = cmp.compare(project, ["20260101-000000-abcd", "champion"], cost=False)
    assert row(same, "champion").delta_dice == 0 and row(same, "champion").p_wilcoxon == 1.0


def test_cost_columns_and_a_shared_model_file_measured_once(project, in_process_cost):
    small = tiny_model(project / "small.pt")
    write_run(project / "runs" / "base", per_case(), model=small)
    write_run(project / "runs" / "copy", per_case(seed=2), model=small)
    result = cmp.compare(project, ["runs/base", "runs/copy", "runs/better"], cost=True)
    assert len(in_process_cost) == 1, "the same model file was measured twice"
    expected = profile_bundle(load_model_file(small), repeats=1, warmup=0, threads=1)
    base = row(result, "base")
    assert base.params == expected.params and base.gflops == pytest.approx(expected.flops / 1e9)
    assert base.latency_ms > 0 and base.device == "cpu"
    assert row(result, "copy").params == base.params
    assert np.isnan(row(result, "better").params) and np.isnan(row(result, "better").u_score)
    assert any("no model file for better" in note for note in result.notes)


def test_u_score_ranks_between_the_compared_models():
    table = pd.DataFrame({"iou_mean": [0.70, 0.80, 0.75], "params": [1e6, 4e6, 2e6],
                          "gflops": [1.0, 4.0, 2.0], "latency_ms": [10.0, 20.0, 15.0]})
    scores = cmp.u_score(table)
    # model 0: efficiency 1, performance 0 -> 0; model 1: the reverse -> 0;
    # model 2: performance 0.5, efficiency (0.5 + 0.5 + (66.67-50)/(100-50)) / 3 = 4/9
    assert scores.tolist() == pytest.approx([0.0, 0.0, 2 * 0.5 * (4 / 9) / (0.5 + 4 / 9)])
    assert cmp.u_score(table.iloc[:2]).isna().all(), "two models cannot be normalised against each other"
    fixed = cmp.u_score(table.iloc[:1], {"iou": (0.6, 0.8), "params": (1e5, 1e7), "gflops": (0.1, 10.0),
                                         "fps": (0.0, 200.0)})
    assert fixed.tolist() == pytest.approx([2 * 0.5 * 0.5 / 1.0])


def make_dvc_repo(dest: Path, model: Path) -> Path:
    """git + DVC repo whose `evaluate` stage copies a per-case table chosen by params.yaml `run`."""
    dest.mkdir()
    write_run(dest / "inputs" / "a", per_case(), model=model)
    write_run(dest / "inputs" / "b", per_case(shift=0.03), model=model)
    (dest / "params.yaml").write_text("run: a\n")
    (dest / "copy.py").write_text(
        "import shutil, yaml, pathlib\nrun = yaml.safe_load(open('params.yaml'))['run']\n"
        "for sub, name in (('evaluate', 'per_case.csv'), ('register', 'model.pt')):\n"
        "    pathlib.Path('artifacts', sub).mkdir(parents=True, exist_ok=True)\n"
        "    shutil.copy(f'inputs/{run}/{name}', f'artifacts/{sub}/{name}')\n")
    (dest / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": "python copy.py", "deps": ["copy.py", "inputs"], "params": ["run"],
        "outs": ["artifacts/evaluate/per_case.csv", "artifacts/register/model.pt"]}}}))
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "t@localhost"],
                    ["git", "config", "user.name", "t"], [str(BIN / "dvc"), "init", "-q"],
                    [str(BIN / "dvc"), "repro", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "a"],
                    [str(BIN / "dvc"), "exp", "run", "-q", "-n", "run-b", "-S", "run=b"]):
        run(command, dest)
    return dest


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_experiments_and_revisions_are_read_through_dvc(tmp_path, in_process_cost):
    repo = make_dvc_repo(tmp_path / "repo", tiny_model(tmp_path / "small.pt"))
    result = cmp.compare(repo, ["exp:HEAD"], all_exps=True, cost=True)
    assert list(result.table.name) == ["exp:HEAD", "exp:run-b"]
    assert row(result, "exp:run-b").delta_dice == pytest.approx(0.03)
    assert row(result, "exp:HEAD").params > 0 and len(in_process_cost) == 1  # same model at both revs
    lock = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], repo).stdout)
    md5 = next(o["md5"] for o in lock["stages"]["evaluate"]["outs"] if o["path"].endswith("per_case.csv"))
    (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).unlink()
    with pytest.raises(cmp.CompareError, match=r"exp:HEAD: artifacts/evaluate/per_case.csv cannot be read.*cache"):
        cmp.compare(repo, ["exp:HEAD", "exp:run-b"], cost=False)
    with pytest.raises(cmp.CompareError, match="exp:nosuch: no git revision or DVC experiment"):
        cmp.compare(repo, ["exp:nosuch"], cost=False)
    with pytest.raises(cmp.CompareError, match="'nosuch' is not 'workspace'.*registry"):  # params.yaml not segflow's
        cmp.compare(repo, ["nosuch"], cost=False)


def test_cli_prints_the_table_and_errors_without_traceback(project, monkeypatch):
    from segflow.cli import app

    monkeypatch.chdir(project)
    done = CliRunner().invoke(app, ["compare", "runs/base", "runs/better", "--no-cost", "--csv", "o/c.csv",
                                    "--png", "o/c.png"])
    assert done.exit_code == 0, done.output
    assert "baseline: base" in done.output and "+0.0200" in done.output
    assert (project / "o" / "c.csv").is_file() and (project / "o" / "c.png").is_file()
    failed = CliRunner().invoke(app, ["compare", "runs/base", "nosuch", "--no-cost"])
    assert failed.exit_code == 1
    assert "segflow: compare failed: 'nosuch'" in failed.output and "Traceback" not in failed.output
