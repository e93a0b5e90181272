"""train: fit the network for one fold (dvc.yaml runs it per fold in split.folds) with
`segflow.training.trainer.Trainer`, which checkpoints every epoch and resumes from the last; with
a budget that chose more than one configuration (segflow.planning.configurations), each in turn,
the native one in the fold's own files and the others in its configurations/ folder.
`params` arrive resolved (plan values in) and narrowed to the fold. With train.nproc_per_node > 1
the stage reruns itself under torchrun (DDP, `segflow.training.distributed`)."""

from __future__ import annotations

from pathlib import Path

from segflow.config import Params
from segflow.files import file_hash, write_json
from segflow.paths import Paths
from segflow.planning.configurations import configuration_params, native_name, planned_configurations
from segflow.planning.plan import Plan, TrainingPlan
from segflow.training import distributed as D
from segflow.training.summary import TrainSummary
from segflow.training.trainer import Trainer, the_fold
from segflow.training.usage import Stopwatch


def main(params: Params, paths: Paths, tracker=None) -> dict:
    """Train the fold here, or under torchrun when train.nproc_per_node > 1 (see `launch_workers`)."""
    if params.train.nproc_per_node > 1 and not D.is_distributed():
        return launch_workers(params, paths)
    with D.process_group():
        summary = train_configurations(params, paths, tracker)
        D.barrier()  # the other ranks wait for rank 0's model file and summary
    return summary


def train_configurations(params: Params, paths: Paths, tracker=None) -> dict:
    """Every configuration the plan trains, on this fold; the native one's summary (what W&B and
    DVC show as the stage's), the others' under their names. The W&B run follows the native one's
    epochs; the others' summaries reach it at the end."""
    plan, training = Plan.load(paths.plan), TrainingPlan.load(paths.training_plan)
    names, native = planned_configurations(training, plan.spatial_dims), native_name(plan.spatial_dims)
    summaries = {}
    for name in names:
        own = paths.of_configuration(name, native)
        predicted = training.budget.predicted_minutes[name] * 60 if training.budget else None
        summaries[name] = train_fold(configuration_params(params, plan, training, name), own,
                                     tracker if name == native else None, plan, name, predicted)
    fold = the_fold(params)
    if D.is_main_process():
        write_json(paths.configurations_index(fold), {"native": native, "configurations": names})
    others = {f"{name}/{key}": value for name in names if name != native for key, value in summaries[name].items()}
    if tracker and others:
        tracker.summary({f"train/{key}": value for key, value in others.items()})
    return {**summaries[native], **others}


def launch_workers(params: Params, paths: Paths) -> dict:
    """Rerun this stage for the fold as train.nproc_per_node torchrun workers; rank 0's summary."""
    fold = the_fold(params)
    D.per_rank_batch(params.train.batch_size, params.train.nproc_per_node)  # refuse before starting any
    D.launch_torchrun(params.train.nproc_per_node, "segflow.cli", ["stage", "train", "--fold", str(fold)],
                      cwd=paths.root)
    return TrainSummary.load(paths.train_summary_for(fold)).model_dump()


def code_digest() -> dict[str, str]:
    """Hashes of the code the train stage runs (its import closure, the same that dvc.yaml's deps
    are checked against), so a checkpoint is never resumed across a change of it."""
    import segflow
    from segflow.stages.dependencies import code_files, stage_code

    package = Path(segflow.__file__).parent
    return {f.relative_to(package).as_posix(): file_hash(f) for f in code_files(stage_code("train", planned=True))}


def train_fold(params: Params, paths: Paths, tracker=None, plan: Plan | None = None, configuration: str = "",
               predicted_seconds: float | None = None) -> dict:
    """Fit, then (rank 0 only; the others return {}) write the model file and the summary (with
    the budget's predicted seconds for this model, when there is a budget)."""
    # First the trainer: a resumed fold points the tracker at its earlier W&B run before anything is logged.
    trainer = Trainer(params, paths, tracker, code_digest=code_digest())
    if tracker:  # lineage: this model was trained on ingest's dataset artifact (opens the W&B run)
        from segflow.data.splits import Splits
        from segflow.tracking.runs import dataset_artifact

        dataset = dataset_artifact(Splits.load(paths.splits).dataset)
        tracker.use_artifact_files([paths.manifest, paths.splits], name=dataset, type="dataset")
    clock = Stopwatch()  # seconds_this_run: this process's training, W&B's start-up left out
    trainer.fit()
    if not D.is_main_process():
        return {}
    plan = plan or Plan.load(paths.plan)
    written = trainer.write_outputs(plan.preprocessing.model_dump(), clock, predicted_seconds)
    print(f"train: fold {trainer.fold} {configuration} trained {written.epochs} epochs in {written.against_prediction()}")
    summary = written.model_dump()
    if tracker:  # the summary's numbers reach W&B as train/<key> through run_stage
        from segflow.tracking.runs import fold_model_artifact

        tracker.log_artifact(paths.model_for(trainer.fold), name=fold_model_artifact(trainer.fold), type="model",
                             metadata=summary)
    return summary
