"""W&B tracking for pipeline stages that can never fail the pipeline.

Every stage logs into one W&B run, named `<stage>` or `<stage>-fold<k>` (`run_name`), grouped
by pipeline run (`pipeline_group`) and typed by stage (`job_type`). The run opens at the stage's
first W&B call, so a resumed training can first say which run it continues (`continue_run`): its
epochs land in the run (same id, same group) that logged the epochs before the interruption.

Metrics are files first; W&B only mirrors them, so any W&B problem (missing package, bad
settings, a failing log call) turns the run into a no-op with one warning, and the stage goes on.
`wandb` is imported lazily: importing this module costs nothing.

    with stage_run("train", config, fold=0) as run:
        run.log({"loss": 0.3}, step=1)
        run.use_artifact_files([manifest], name="hippocampus-manifest", type="dataset")
        run.log_artifact(Path("models/unet.pt"), name="unet", type="model")

Lineage: a stage declares what it read with `use_artifact_files` (the same files a previous stage
logged, so W&B resolves them to that stage's artifact version by content digest) and what it made
with `log_artifact`. Both work offline and are replayed by `wandb sync`.

Set `SEGFLOW_TRACKING=off` to skip W&B entirely. Online, the W&B server is probed once per
pipeline run (a few seconds at most): when it cannot be reached every stage of the run logs
offline, with one warning, instead of each stage waiting out wandb's 90 s init timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from segflow.processes.parent_watch import dvc_ancestor

log = logging.getLogger(__name__)

GROUP_ENV = "SEGFLOW_RUN_GROUP"
TRACKING_ENV = "SEGFLOW_TRACKING"
DEFAULT_PROJECT = "segflow"
SECRET_KEY = re.compile(r"api_?key|token|secret|password", re.IGNORECASE)
_OFF_VALUES = {"off", "0", "false", "no", "disabled"}
_ONLINE_MODES = {"online", "run", ""}  # wandb's names for logging to a server; unset is online
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0


def artifact_name(*parts: object) -> str:
    """A W&B artifact name from `parts` (W&B allows letters, digits, '-', '_' and '.')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(str(p) for p in parts)).strip("-")


def dataset_artifact(dataset: str) -> str:
    """Name of the dataset artifact (ingest's manifest and split) of `dataset`."""
    return artifact_name("dataset", dataset)


def fold_model_artifact(fold: int) -> str:
    return artifact_name("model", f"fold{fold}")


MODEL_ARTIFACT = "model"  # the registered fold ensemble
EVALUATION_ARTIFACT = "evaluation"  # per-case scores and metrics


def run_name(stage: str, fold: int | None = None) -> str:
    """W&B display name of a stage's run: `train-fold0`, `evaluate` (the group says which pipeline run)."""
    return stage if fold is None else f"{stage}-fold{fold}"


@dataclass(frozen=True)
class RunIdentity:
    """Which W&B run a stage logged into: what a resumed stage needs to continue it."""

    run_id: str
    group: str

    def to_dict(self) -> dict[str, str]:
        return {"run_id": self.run_id, "group": self.group}

    @classmethod
    def from_dict(cls, value: object) -> RunIdentity | None:
        """The identity stored by `to_dict`, or None for anything else (an older file, no run)."""
        if isinstance(value, Mapping) and all(isinstance(value.get(k), str) and value[k] for k in ("run_id", "group")):
            return cls(run_id=value["run_id"], group=value["group"])
        return None


def tracking_enabled() -> bool:
    """False when the user turned W&B off with `SEGFLOW_TRACKING=off`."""
    return os.environ.get(TRACKING_ENV, "on").strip().lower() not in _OFF_VALUES


def pipeline_group() -> str:
    """W&B group of this pipeline run.

    `$SEGFLOW_RUN_GROUP` when set (make run, the Prefect flow); else, under `dvc repro`, one
    group per dvc process (every stage of one `dvc repro` is its descendant); else
    `local-<date>-<git sha>`.
    """
    group = os.environ.get(GROUP_ENV, "").strip()
    if group:
        return group
    sha = _short_git_sha() or "nogit"
    dvc_run = dvc_ancestor()
    if dvc_run is not None:
        return f"dvc-{dt.datetime.fromtimestamp(dvc_run.started):%Y%m%d-%H%M%S}-{dvc_run.pid}-{sha}"
    return f"local-{dt.datetime.now():%Y%m%d}-{sha}"


def _short_git_sha() -> str | None:
    """Short sha of HEAD of the git repository around the cwd, or None outside one."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None


def server_reachable(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the W&B server at `base_url` answers HTTP at all (any status) within `timeout`."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/healthz", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):  # refused, unresolvable, timed out, not a URL
        return False


def _probe_record(group: str) -> Path:
    state = Path(os.environ.get("WANDB_DIR") or ".")
    return state / "wandb-probe" / f"{artifact_name(group)}.json"


def offline_for_this_run(group: str) -> bool:
    """Whether this pipeline run (`group`) must log offline because the W&B server is unreachable.

    Only an online mode is probed, once per group: the first stage records the answer in
    $WANDB_DIR/wandb-probe/ and warns; the run's later stages read it and go offline quietly."""
    if os.environ.get("WANDB_MODE", "").strip().lower() not in _ONLINE_MODES:
        return False
    record = _probe_record(group)
    with contextlib.suppress(OSError, ValueError, KeyError):
        return not json.loads(record.read_text())["reachable"]
    base_url = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    reachable = server_reachable(base_url)
    with contextlib.suppress(OSError):
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"reachable": reachable, "base_url": base_url}))
    if not reachable:
        log.warning("W&B server %s did not answer within %.0f s: this run (%s) logs offline; upload it later "
                    "with `wandb sync %s`", base_url, PROBE_TIMEOUT_S, group, os.environ.get("WANDB_DIR", "wandb"))
    return not reachable


def scrub_secrets(value: Any) -> Any:
    """Copy of `value` without mapping keys that look like secrets, at any depth."""
    if isinstance(value, Mapping):
        return {
            key: scrub_secrets(item)
            for key, item in value.items()
            if not SECRET_KEY.search(str(key))
        }
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_secrets(item) for item in value)
    return value


@dataclass(frozen=True)
class RunLink:
    """A stage's W&B run as the results page links it: its local folder (an offline run's is what
    `wandb sync` uploads) and, for an online run, its URL."""

    stage: str
    group: str
    run_id: str
    mode: str  # "online" or "offline"
    folder: str
    url: str | None = None


def _links_dir(group: str) -> Path:
    return Path(os.environ.get("WANDB_DIR") or ".") / "run-links" / artifact_name(group)


def record_run(link: RunLink) -> None:
    """Note a started run under its pipeline group ($WANDB_DIR/run-links/<group>/), one file per run."""
    dest = _links_dir(link.group) / f"{artifact_name(link.stage, link.run_id)}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(asdict(link)))


def runs_of_group(group: str) -> list[RunLink]:
    """The runs `record_run` noted for pipeline group `group`, oldest first (none: an empty list)."""
    files = sorted(_links_dir(group).glob("*.json"), key=lambda f: (f.stat().st_mtime, f.name))
    links = []
    for file in files:
        with contextlib.suppress(OSError, ValueError, TypeError):
            links.append(RunLink(**json.loads(file.read_text())))
    return links


class StageRun:
    """One stage's W&B run; every method degrades to a no-op once W&B fails.

    `start` only arms the run; W&B opens it at the first call that needs it (or at `finish`, so a
    stage that logged nothing still leaves its run, failed or not). Until then `continue_run` may
    point it at an earlier run. A StageRun never started stays a no-op (a DDP rank that does not track).

    Attributes:
        stage: the stage name, used as the W&B `job_type`.
        name: the W&B display name, `<stage>` or `<stage>-fold<k>`.
        group: the W&B group (one per pipeline run; a continued run keeps its own).
        run: the live `wandb.Run`, or None before it opens, when tracking is off or failed.
        error: why tracking is disabled (None while it works or when it was turned off).
    """

    def __init__(self, stage: str, config: Mapping[str, Any], group: str | None = None, fold: int | None = None):
        self.stage = stage
        self.name = run_name(stage, fold)
        self.config = scrub_secrets(dict(config))
        self.group = group or pipeline_group()
        self.run: Any = None
        self.error: str | None = None
        self._wandb: Any = None
        self._armed = False
        self._continues: RunIdentity | None = None

    @property
    def active(self) -> bool:
        """True while calls are forwarded to a live W&B run."""
        return self.run is not None and self.error is None

    def _ready(self) -> bool:
        """Whether a call can go to a live run; opens the armed run at its first use."""
        if self._armed and self.run is None and self.error is None:
            self._open()
        return self.active

    @property
    def identity(self) -> RunIdentity | None:
        """The live run's id and group (what a checkpoint keeps to continue it); None without one."""
        return RunIdentity(run_id=self.run.id, group=self.group) if self._ready() else None

    def start(self) -> StageRun:
        """Arm the W&B run; it opens at first use (or stays a no-op when tracking is off)."""
        if not tracking_enabled():
            log.info("W&B tracking off for stage %s (%s)", self.stage, TRACKING_ENV)
            return self
        self._armed = True
        return self

    def continue_run(self, earlier: RunIdentity) -> None:
        """Log into the `earlier` run (same id, same group) instead of a new one: a resumed training
        goes on in the run of its first epochs. Only before the run opened (else it warns)."""
        if self.run is not None:
            log.warning("W&B run of stage %s is already open; it cannot continue run %s", self.stage, earlier.run_id)
            return
        self._continues, self.group = earlier, earlier.group

    def _open(self) -> None:
        try:
            import wandb

            self._wandb = wandb
            self.run = wandb.init(**self._init_kwargs())
        except Exception as exc:  # noqa: BLE001 - any W&B failure must not stop the stage
            self._disable("init failed", exc)
        if self.active:
            with self._guard("recording the run's link"):
                record_run(self._link())

    def _link(self) -> RunLink:
        """Where this run can be looked at: its local folder and, online, its page."""
        fold = (self.config.get("segflow") or {}).get("fold")
        offline = bool(self.run.offline)
        return RunLink(stage=self.stage if fold is None else f"{self.stage} fold {fold}", group=self.group,
                       run_id=str(self.run.id), mode="offline" if offline else "online",
                       folder=str(Path(self.run.dir).resolve().parent), url=None if offline else self.run.url)

    def _init_kwargs(self) -> dict[str, Any]:
        """wandb.init arguments; dir and mode come from the current environment explicitly,
        because wandb caches its environment at the first init of a process."""
        kwargs: dict[str, Any] = {
            "project": os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            "group": self.group,
            "name": self.name,
            "job_type": self.stage,
            "config": self.config,
            # A new run even if another is open; this run never touches the global wandb.run.
            "reinit": "create_new",
        }
        if self._continues is not None:
            # "allow", not "must": a run first logged offline and never synced is new to a server.
            # Offline, wandb 0.31 writes a second offline-run folder with the same id, and
            # `wandb sync` uploads both folders into the one run, in order.
            kwargs.update(id=self._continues.run_id, resume="allow")
        if os.environ.get("WANDB_DIR"):
            kwargs["dir"] = os.environ["WANDB_DIR"]
        if os.environ.get("WANDB_MODE"):
            kwargs["mode"] = os.environ["WANDB_MODE"]
        if offline_for_this_run(self.group):
            kwargs["mode"] = "offline"
        return kwargs

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run with `exit_code` (non-zero marks it failed); never raises."""
        self._ready()  # opens a run the stage never logged to, so its outcome is recorded too
        self._armed = False
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            self._disable("finish failed", exc)

    def __enter__(self) -> StageRun:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    def _disable(self, what: str, exc: BaseException) -> None:
        """Record the first failure and warn once; later calls become no-ops."""
        if self.error is not None:
            log.debug("W&B %s for stage %s after it was disabled: %s", what, self.stage, exc)
            return
        self.error = f"{what}: {type(exc).__name__}: {exc}"
        log.warning("W&B tracking disabled for stage %s: %s", self.stage, self.error)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001
            self._disable(f"{what} failed", exc)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log a row of metrics (to history and, as latest value, to the summary)."""
        if self._ready():
            with self._guard("log"):
                self.run.log(dict(metrics), step=step)

    def summary(self, metrics: Mapping[str, Any]) -> None:
        """Set final values in the run summary (e.g. the test Dice)."""
        if self._ready():
            with self._guard("summary"):
                self.run.summary.update(dict(metrics))

    def log_images(
        self, key: str, paths: Sequence[Path], captions: Sequence[str] | None = None
    ) -> None:
        """Log image files (e.g. prediction overlays) under `key`."""
        if captions is not None and len(captions) != len(paths):
            raise ValueError(f"{len(captions)} captions for {len(paths)} images in {key!r}")
        if self._ready():
            with self._guard("log_images"):
                names = captions if captions is not None else [None] * len(paths)
                images = [self._wandb.Image(str(p), caption=c) for p, c in zip(paths, names)]
                self.run.log({key: images})

    def log_table(self, key: str, dataframe: Any) -> None:
        """Log a pandas DataFrame (e.g. per-case metrics) as a W&B table."""
        if self._ready():
            with self._guard("log_table"):
                self.run.log({key: self._wandb.Table(dataframe=dataframe)})

    def _artifact(self, paths: Path | Sequence[Path], name: str, type: str,  # noqa: A002
                  metadata: Mapping[str, Any] | None) -> Any:
        """A draft W&B artifact holding the files/folders `paths` (at their base names)."""
        artifact = self._wandb.Artifact(name, type=type, metadata=scrub_secrets(dict(metadata or {})))
        for path in [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]:
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            else:
                artifact.add_file(str(path), name=path.name)
        return artifact

    def log_artifact(
        self,
        path: Path | Sequence[Path],
        name: str,
        type: str,  # noqa: A002 - W&B's own name for it
        aliases: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Log files or folders as a new version of artifact `name`, output of this run."""
        if self._ready():
            with self._guard("log_artifact"):
                self.run.log_artifact(self._artifact(path, name, type, metadata), aliases=aliases)

    def use_artifact_files(
        self,
        path: Path | Sequence[Path],
        name: str,
        type: str,  # noqa: A002
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare files this stage read as input artifact `name` (lineage).

        They are the files an earlier stage logged under the same name, so W&B resolves them to
        that version by digest and links producer -> consumer. Offline, wandb 0.31's public
        `use_artifact` refuses any input (TypeError), so the draft is recorded the way that method
        records drafts online (`_log_artifact(..., use_after_commit=True)`), and `wandb sync`
        replays it as a use.
        """
        if not self._ready():
            return
        with self._guard("use_artifact"):
            artifact = self._artifact(path, name, type, metadata)
            if self.run.offline:
                self.run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
            else:
                self.run.use_artifact(artifact)


def stage_run(stage: str, config: Mapping[str, Any], group: str | None = None,
              fold: int | None = None) -> StageRun:
    """Context manager for a stage's W&B run: `with stage_run("train", cfg, fold=0) as run: ...`.

    The body always runs; its exceptions propagate and mark the W&B run failed.
    """
    return StageRun(stage, config, group, fold)
