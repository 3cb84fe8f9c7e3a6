"""Saving and loading a Conv2D's configuration and weights as .npz.

The file holds plain arrays and a JSON string, and is read with
``allow_pickle=False``: loading a hostile file cannot run code. Anything that
is not such a file gives a ValueError that says what is wrong.
"""

from __future__ import annotations

import json
import zipfile
from os import PathLike
from typing import Any

import numpy as np

FORMAT = "fastconv.Conv2D/1"
CONFIG_KEYS = {
    "filters",
    "kernel_size",
    "stride",
    "padding",
    "padding_mode",
    "dilation",
    "groups",
    "bias",
    "in_channels",
    "dtype",
    "data_format",
}


def save(path: str | PathLike[str], config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write `config` (JSON-able) and `arrays` to an .npz file."""
    meta = json.dumps({"format": FORMAT, **config})
    contents: Any = {"config": np.array(meta), **arrays}
    np.savez(path, **contents)


def load(path: str | PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, arrays) from a file written by `save`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {name: data[name] for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable fastconv .npz file ({exc})") from exc
    if not isinstance(contents, dict) or "config" not in contents:
        raise ValueError(f"{path}: not a fastconv layer file (no 'config' entry)")
    try:
        config = json.loads(str(contents.pop("config")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt configuration ({exc})") from exc
    if not isinstance(config, dict) or config.pop("format", None) != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    if set(config) != CONFIG_KEYS:
        raise ValueError(f"{path}: configuration keys {sorted(config)} are not {sorted(CONFIG_KEYS)}")
    return config, contents
