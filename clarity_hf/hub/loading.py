# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Safe loading of a CLARiTy model folder or Hub repo: safetensors only, clarity_hf's own classes only.

- [`check_safetensors_only`]: a folder holding a pickle checkpoint (`pytorch_model.bin`, ...) and no safetensors is
  refused ([`UnsafeCheckpointError`]); a pickle next to safetensors weights is ignored, never read.
- [`load_for_inference`]: config, model and image processor through the transformers auto classes with
  `trust_remote_code=False`, so no code from the folder ever runs and nothing prompts; a folder whose
  `config.json` or `preprocessor_config.json` names another class than CLARiTy's is refused
  ([`UntrustedModelFolderError`]) before anything is loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from ..configuration_clarity import ClarityConfig
from ..image_processing_clarity import ClarityImageProcessor
from ..modeling_clarity import ClarityForMultiLabelLocalization
from ..pipeline_clarity import ClarityLocalizationPipeline

logger = logging.getLogger(__name__)

__all__ = [
    "PICKLE_SUFFIXES",
    "UnsafeCheckpointError",
    "UntrustedModelFolderError",
    "check_safetensors_only",
    "load_for_inference",
    "pickle_files",
    "resolve_model_folder",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# What a CLARiTy folder may name in its configuration files: anything else would need code from the folder.
MODEL_TYPE = ClarityConfig.model_type
ARCHITECTURES = {ClarityForMultiLabelLocalization.__name__}
IMAGE_PROCESSOR_TYPES = {ClarityImageProcessor.__name__}


class UnsafeCheckpointError(ValueError):
    """A model folder holds pickle weights and no safetensors: clarity_hf never loads it."""


class UntrustedModelFolderError(ValueError):
    """A model folder names classes other than CLARiTy's: loading it would run code from the folder."""


def pickle_files(folder: Path) -> list[str]:
    """The names of the pickle checkpoints directly in `folder`."""
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(PICKLE_SUFFIXES)
    )


def check_safetensors_only(folder: str | Path) -> Path:
    """Check that `folder` holds safetensors weights; refuse a folder with only pickle checkpoints.

    Raises `FileNotFoundError` when the folder or `config.json` is missing, and [`UnsafeCheckpointError`] when no
    `*.safetensors` file is present (naming any pickle file found). A pickle file next to safetensors weights is
    ignored (a warning is logged): only the safetensors file is read. Returns the folder as a `Path`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    pickles = pickle_files(folder)
    if not any(folder.glob("*.safetensors")):
        if pickles:
            raise UnsafeCheckpointError(
                f"{folder}: refusing to load the pickle checkpoint(s) {', '.join(pickles)}: it has no *.safetensors "
                "weights, and clarity_hf only loads safetensors (unpickling a file can execute arbitrary code). "
                "Convert it in a trusted environment (load it there and call `model.save_pretrained(dir)`, which "
                "writes model.safetensors), then load that folder."
            )
        raise FileNotFoundError(f"{folder}: no model.safetensors (no *.safetensors file) in this folder")
    if pickles:
        logger.warning(
            "%s: ignoring pickle file(s) %s; only the safetensors weights are read", folder, pickles
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    return folder


def resolve_model_folder(
    folder_or_repo: str | Path, revision: str | None = None, token: str | None = None
) -> Path:
    """A local folder as is, or a Hub repo id downloaded with `snapshot_download` restricted to config,
    safetensors and card files (pickle files and code are never downloaded); then [`check_safetensors_only`]."""
    path = Path(folder_or_repo)
    if path.is_dir():
        return check_safetensors_only(path)
    if path.exists() or str(folder_or_repo).startswith((".", "/")):
        raise FileNotFoundError(f"{folder_or_repo}: not a model folder")
    local = snapshot_download(
        str(folder_or_repo),
        revision=revision,
        token=token,
        allow_patterns=["*.json", "*.safetensors", "*.md"],
    )
    try:
        return check_safetensors_only(local)
    except FileNotFoundError as err:
        raise UnsafeCheckpointError(
            f"Hub repo {folder_or_repo}: no *.safetensors weights ({err}); clarity_hf never downloads or loads "
            "pickle checkpoints such as pytorch_model.bin"
        ) from err


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def check_clarity_classes(folder: Path) -> None:
    """Refuse a folder whose `config.json` / `preprocessor_config.json` names a class that is not CLARiTy's."""
    config = _read_json(folder / "config.json")
    problems = []
    if config.get("model_type") != MODEL_TYPE:
        problems.append(f"config.json: model_type {config.get('model_type')!r} (expected {MODEL_TYPE!r})")
    other = set(config.get("architectures") or []) - ARCHITECTURES
    if other:
        problems.append(f"config.json: architectures {sorted(other)} (expected {sorted(ARCHITECTURES)})")
    processor_path = folder / "preprocessor_config.json"
    if processor_path.is_file():
        processor_type = _read_json(processor_path).get("image_processor_type")
        if processor_type not in IMAGE_PROCESSOR_TYPES:
            problems.append(
                f"preprocessor_config.json: image_processor_type {processor_type!r} "
                f"(expected {sorted(IMAGE_PROCESSOR_TYPES)})"
            )
    if problems:
        raise UntrustedModelFolderError(
            f"{folder}: not a CLARiTy model folder that clarity_hf can load without running code from it: "
            + "; ".join(problems)
            + ". clarity_hf only loads its own classes (trust_remote_code=False); inspect the folder's code and "
            "load it with transformers yourself if you trust it."
        )


def load_for_inference(
    folder_or_repo: str | Path,
    revision: str | None = None,
    token: str | None = None,
    device: str | int | None = None,
) -> ClarityLocalizationPipeline:
    """A ready [`ClarityLocalizationPipeline`] from a model folder or Hub repo id: safetensors only, clarity_hf's own
    classes only (`trust_remote_code=False` for the config, the model and the image processor: no code from the
    folder is executed and nothing is asked at a terminal). A folder without `preprocessor_config.json` gets a
    default `ClarityImageProcessor` at the model's input size."""
    folder = resolve_model_folder(folder_or_repo, revision=revision, token=token)
    check_clarity_classes(folder)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    model = AutoModel.from_pretrained(folder, config=config, trust_remote_code=False, use_safetensors=True)
    if (folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
    else:
        processor = ClarityImageProcessor(size=config.image_size, id2label=config.id2label)
    if not isinstance(model, ClarityForMultiLabelLocalization) or not isinstance(
        processor, ClarityImageProcessor
    ):
        raise UntrustedModelFolderError(
            f"{folder}: loaded {type(model).__name__} / {type(processor).__name__}, not clarity_hf's classes"
        )
    return ClarityLocalizationPipeline(model=model.eval(), image_processor=processor, device=device)
