"""params.yaml overrides as `dvc exp run -S` takes them (`train.epochs=2`, `model.channels=[8,16]`,
Hydra's `+model.res_block=true` to add a key and `~model.norm` to remove one).

They go through DVC's own Hydra-based override code, so the grammar and the kept comments are
DVC's. A typo'd key is an error (the file's structure is strict), the result must pass the typed
config, and params.yaml is replaced in one rename: it is never left half-edited.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from segflow.config import ConfigError, load_params
from segflow.files import atomic_path


def well_formed(text: str) -> bool:
    """`key=value`, or Hydra's deletion `~key` (a value after it must match the current one)."""
    key, equals, _ = text.partition("=")
    return bool(key.strip().lstrip("~+").strip()) and (bool(equals) or text.startswith("~"))


def apply_overrides(params_file: Path, overrides: list[str]) -> None:
    """Set each `key=value` in `params_file`; ConfigError (naming the override) when one is bad."""
    if not overrides:
        return
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    params_file = Path(params_file)
    for text in overrides:
        if not well_formed(text):
            raise ConfigError(f"{params_file}: override {text!r} is not key=value (e.g. train.epochs=2) "
                              "or ~key (removes the key)")
    with atomic_path(params_file) as staged:
        shutil.copy2(params_file, staged)
        # Hydra infers the format from the suffix; atomic_path's temporary ends in .tmp.
        with tempfile.TemporaryDirectory() as scratch:
            edited = Path(scratch) / "params.yaml"
            shutil.copy2(params_file, edited)
            try:
                dvc_apply_overrides(edited, list(overrides))
            except InvalidArgumentError as exc:
                cause = exc.__cause__ or exc
                raise ConfigError(f"{params_file}: overrides {list(overrides)} rejected: {cause}") from None
            try:
                load_params(edited)
            except ConfigError as exc:
                reason = str(exc).replace(str(edited), str(params_file))
                raise ConfigError(f"overrides {list(overrides)}: {reason}") from None
            shutil.copy2(edited, staged)
