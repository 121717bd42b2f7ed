"""Where models live: ``$WASM_ENGINE_MODELS``, else ``models/`` in the project checkout.

Models are built (``wasm-engine models build NAME``), never committed; the folder is git-ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_MODELS = "WASM_ENGINE_MODELS"


def project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (cwd) that holds the workspace pyproject."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "inference-worker").is_dir() and (folder / "pyproject.toml").exists():
            return folder
    return None


def models_dir(env: dict[str, str] | None = None) -> Path:
    """The model repository: ``$WASM_ENGINE_MODELS``, else ``<project>/models``, else ./models."""
    value = (env if env is not None else os.environ).get(ENV_MODELS, "")
    if value:
        return Path(value)
    root = project_root()
    return (root if root is not None else Path.cwd()) / "models"
