# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Safe loading of a CLARiTy model folder or Hub repo: safetensors only, clarity_hf's own classes only.

- [`check_safetensors_only`]: a folder holding a pickle checkpoint (`pytorch_model.bin`, ...) and no safetensors is
  refused ([`UnsafeCheckpointError`]); a pickle next to safetensors weights is ignored, never read.
- [`load_for_inference`]: config, model and image processor through the transformers auto classes with
  `trust_remote_code=False`, so no code from the folder ever runs and nothing prompts; a folder whose
  `config.json` or `preprocessor_config.json` names another class than CLARiTy's is refused
  ([`UntrustedModelFolderError`]) before anything is loaded.
- [`check_model_folder`] (run by [`load_for_inference`]): a folder is checked before it is trusted, so that broken
  weights never give valid-looking predictions. Sizes in `config.json` and `preprocessor_config.json` are checked
  before anything is built ([`check_config_sizes`], [`check_processor_size`]); the safetensors headers are read
  and every tensor's name, shape and dtype compared with the model's own before any weight is loaded
  ([`check_weights`]); the loaded weights must be finite. Every problem is an [`InvalidModelFolderError`] naming
  the folder (the errors for pickle checkpoints and foreign classes are kinds of it).

Used by prediction, ONNX export, evaluation, the Hub export and the Space, so it sits below all of them and imports
only the model files. Training's fine-tuning path does not come through here: it loads with transformers' explicit
`ignore_mismatched_sizes` so that a new head replaces the old one, loudly.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .configuration_clarity import ClarityConfig
from .image_processing_clarity import ClarityImageProcessor
from .modeling_clarity import ClarityForMultiLabelLocalization
from .pipeline_clarity import ClarityLocalizationPipeline
from .xray_io import resolve_max_image_pixels

logger = logging.getLogger(__name__)

__all__ = [
    "PICKLE_SUFFIXES",
    "InvalidModelFolderError",
    "UnsafeCheckpointError",
    "UntrustedModelFolderError",
    "check_config_sizes",
    "check_model_folder",
    "check_processor_size",
    "check_safetensors_only",
    "check_weights",
    "load_for_inference",
    "load_model_strictly",
    "pickle_files",
    "resolve_model_folder",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# What a CLARiTy folder may name in its configuration files: anything else would need code from the folder.
MODEL_TYPE = ClarityConfig.model_type
ARCHITECTURES = {ClarityForMultiLabelLocalization.__name__}
IMAGE_PROCESSOR_TYPES = {ClarityImageProcessor.__name__}


class InvalidModelFolderError(ValueError):
    """A model folder that cannot be trusted to give real predictions: sizes out of range, weights missing,
    unexpected, mis-shaped, not floating point or not finite, an unreadable safetensors file. The message names the
    folder and the problem."""


class UnsafeCheckpointError(InvalidModelFolderError):
    """A model folder holds pickle weights and no safetensors: clarity_hf never loads it."""


class UntrustedModelFolderError(InvalidModelFolderError):
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
        raise InvalidModelFolderError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise InvalidModelFolderError(f"{path}: expected a JSON object")
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


# Bounds on what a folder may ask the model to build (far above every CLARiTy preset and ViT-H/14). A value past
# them is a corrupt or hostile config: transformers would try to allocate it before any weight is read.
MAX_CONFIG_SIZES = {
    "num_hidden_layers": 128,
    "hidden_size": 8192,
    "num_attention_heads": 256,
    "intermediate_size": 65536,
    "foreground_hidden_size": 8192,
    "anatomical_prior_size": 4096,
    "num_channels": 16,
}
MAX_PATCH_TOKENS = 16384  # (image_size / patch_size)^2: 2048 x 2048 input pixels at patch size 16
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights
MAX_LABELS = 10_000
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
FLOATING_DTYPES = {"F16", "BF16", "F32", "F64"}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _label_problem(labels) -> str | None:
    """What is wrong with `id2label`, if anything: every class index 0 .. n-1 once, each a distinct non-empty name
    (the tables have one column per name, and the archive run looks every index up)."""
    if labels is None:
        return None
    if not isinstance(labels, dict) or not 0 < len(labels) <= MAX_LABELS:
        count = len(labels) if isinstance(labels, dict) else repr(labels)
        return f"id2label with {count} entries (1 to {MAX_LABELS})"
    if {str(key) for key in labels} != {str(index) for index in range(len(labels))}:
        return f"id2label keys {sorted(map(str, labels))[:10]} (must be 0 .. {len(labels) - 1})"
    names = list(labels.values())
    if not all(isinstance(name, str) and name.strip() for name in names):
        return "id2label names must be non-empty strings"
    if len(set(names)) != len(names):
        return f"id2label repeats names {sorted({n for n in names if names.count(n) > 1})}"
    return None


def check_config_sizes(folder: Path, config: dict, max_image_pixels: int | None = None) -> None:
    """Refuse a `config.json` whose sizes would build an absurd model (layers, widths, input size against the pixel
    limit, tokens, parameters) or whose labels are inconsistent, before transformers instantiates anything."""
    problems = []
    for key, bound in MAX_CONFIG_SIZES.items():
        value = config.get(key)
        if value is not None and (not _positive_int(value) or value > bound):
            problems.append(f"{key} {value!r} (must be an integer in [1, {bound}])")
    image_size, patch_size = config.get("image_size", 224), config.get("patch_size", 16)
    limit = resolve_max_image_pixels(max_image_pixels)
    if not _positive_int(image_size) or image_size * image_size > limit:
        problems.append(f"image_size {image_size!r} (image_size^2 must be at most the pixel limit {limit})")
    elif not _positive_int(patch_size) or (image_size // patch_size) ** 2 > MAX_PATCH_TOKENS:
        problems.append(
            f"patch_size {patch_size!r} for image_size {image_size} (at most {MAX_PATCH_TOKENS} patches)"
        )
    label_problem = _label_problem(config.get("id2label"))
    if label_problem:
        problems.append(label_problem)
    if not problems:
        layers, width = config.get("num_hidden_layers", 12), config.get("hidden_size", 384)
        mlp = config.get("intermediate_size", 4 * width)
        parameters = layers * (4 * width * width + 2 * width * mlp)
        if parameters > MAX_PARAMETERS:
            problems.append(f"about {parameters:.3g} parameters (at most {MAX_PARAMETERS:.3g})")
    if problems:
        raise InvalidModelFolderError(
            f"{folder}: config.json is refused (absurd or inconsistent values): " + "; ".join(problems)
        )


def _processor_sides(size) -> list:
    if isinstance(size, dict):
        return [size.get(key) for key in ("height", "width", "shortest_edge", "longest_edge") if key in size]
    return [size]


def check_processor_size(folder: Path, size, max_image_pixels: int | None = None) -> None:
    """Refuse an image processor `size` (int or transformers size dict) that is not positive or whose resized image
    would exceed the pixel limit (every image would fail at run time, or eat memory)."""
    limit = resolve_max_image_pixels(max_image_pixels)
    sides = _processor_sides(size)
    if not sides or not all(_positive_int(side) for side in sides) or max(sides) ** 2 > limit:
        raise InvalidModelFolderError(
            f"{folder}: preprocessor_config.json: size {size!r} is not a positive image size whose square is at "
            f"most the pixel limit {limit}"
        )


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files transformers reads: `model.safetensors`, else the shards its index names. A shard must
    be a plain file name in the folder (checked on the name, not the resolved path: in a Hub download every file is
    a link into the cache's blob store)."""
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        raise InvalidModelFolderError(f"{folder}: no model.safetensors")
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidModelFolderError(f"{index}: no weight_map")
    names = sorted({str(name) for name in weight_map.values()})
    odd = [name for name in names if Path(name).name != name or name.startswith(".") or "\x00" in name]
    if odd:
        raise InvalidModelFolderError(f"{index}: shard names {odd} are not plain file names in {folder}")
    return [folder / name for name in names]


def _read_safetensors_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of every tensor in a safetensors file, read from its header (no tensor data)."""
    from safetensors import safe_open

    size = path.stat().st_size
    if size == 0:
        raise InvalidModelFolderError(f"{path}: is empty (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8:
        raise InvalidModelFolderError(f"{path}: truncated ({size} bytes, not a safetensors file)")
    (header_length,) = struct.unpack("<Q", head)
    if header_length > min(MAX_SAFETENSORS_HEADER, size - 8):
        raise InvalidModelFolderError(
            f"{path}: safetensors header of {header_length} bytes does not fit the file ({size} bytes) or the "
            f"format's limit ({MAX_SAFETENSORS_HEADER})"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {}
            for name in handle.keys():
                part = handle.get_slice(name)
                tensors[name] = (tuple(part.get_shape()), str(part.get_dtype()))
    except InvalidModelFolderError:
        raise
    except Exception as err:  # safetensors raises SafetensorError, OSError, ... for damaged files
        raise InvalidModelFolderError(
            f"{path}: not a readable safetensors file ({type(err).__name__}: {err})"
        ) from err
    return tensors


def _listed(names, limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_weights(folder: Path, config: ClarityConfig, model_class=ClarityForMultiLabelLocalization) -> None:
    """Compare the safetensors headers with the state dict of the `model_class` model `config` builds (on the meta
    device: no memory): every tensor present, none unexpected, each of the same shape and floating point. Raises
    [`InvalidModelFolderError`] listing what differs."""
    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in _weight_files(folder):
        if not path.is_file():
            raise InvalidModelFolderError(f"{path}: listed as a weight shard but missing")
        tensors.update(_read_safetensors_header(path))
    build = getattr(model_class, "from_config", model_class)  # an auto class, or the model class itself
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in build(config).state_dict().items()}
    problems = []
    if not tensors:
        problems.append("the weights hold no tensors")
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing and tensors:
        problems.append(f"{len(missing)} of the model's {len(expected)} tensors missing ({_listed(missing)})")
    if unexpected:
        problems.append(f"unexpected tensors ({_listed(unexpected)})")
    shaped = [
        f"{n} {list(tensors[n][0])} (expected {list(expected[n])})"
        for n in sorted(set(expected) & set(tensors))
        if tensors[n][0] != expected[n]
    ]
    if shaped:
        problems.append(f"mis-shaped tensors: {_listed(shaped, 3)}")
    integral = [f"{n} ({dtype})" for n, (_, dtype) in sorted(tensors.items()) if dtype not in FLOATING_DTYPES]
    if integral:
        problems.append(f"tensors that are not floating point: {_listed(integral, 3)}")
    if problems:
        raise InvalidModelFolderError(
            f"{folder}: the weights do not fit the model of config.json: " + "; ".join(problems)
        )


def _check_finite(folder: Path, model) -> None:
    bad = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise InvalidModelFolderError(f"{folder}: weights with NaN or infinite values: {_listed(bad, 3)}")


def check_model_folder(folder: str | Path, max_image_pixels: int | None = None) -> ClarityConfig:
    """Everything about a local model folder that can be checked before its weights are loaded (see the module
    docstring); returns its config. Raises [`InvalidModelFolderError`] naming the folder and the problem."""
    folder = Path(folder)
    check_clarity_classes(folder)
    check_config_sizes(folder, _read_json(folder / "config.json"), max_image_pixels)
    processor_path = folder / "preprocessor_config.json"
    if processor_path.is_file():
        processor = _read_json(processor_path)
        if "size" in processor:
            check_processor_size(folder, processor["size"], max_image_pixels)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise InvalidModelFolderError(f"{folder}: config.json is not a valid CLARiTy config ({err})") from err
    check_weights(folder, config)
    return config


def load_model_strictly(folder: str | Path, model_class=ClarityForMultiLabelLocalization, config=None):
    """`model_class.from_pretrained(folder)` for a job that trusts the weights (evaluation, export), with the
    checks of inference: every tensor present, none unexpected or mis-shaped ([`check_weights`]) and all finite.
    A CLARiTy folder is first checked whole ([`check_model_folder`]). Raises [`InvalidModelFolderError`]."""
    folder = Path(folder)
    if model_class is ClarityForMultiLabelLocalization:
        config = check_model_folder(folder)
    elif config is None:
        config = AutoConfig.from_pretrained(folder)
    check_weights(folder, config, model_class)
    try:
        model = model_class.from_pretrained(folder, config=config, use_safetensors=True)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as err:
        if isinstance(err, InvalidModelFolderError):
            raise
        raise InvalidModelFolderError(f"{folder}: cannot be loaded ({type(err).__name__}: {err})") from err
    _check_finite(folder, model)
    return model


def load_for_inference(
    folder_or_repo: str | Path,
    revision: str | None = None,
    token: str | None = None,
    device: str | int | None = None,
) -> ClarityLocalizationPipeline:
    """A ready [`ClarityLocalizationPipeline`] from a model folder or Hub repo id: safetensors only, clarity_hf's own
    classes only (`trust_remote_code=False` for the config, the model and the image processor: no code from the
    folder is executed and nothing is asked at a terminal), checked by [`check_model_folder`] before its weights
    are loaded and for finite weights after (any problem: [`InvalidModelFolderError`]). A folder without `preprocessor_config.json` gets a
    default `ClarityImageProcessor` at the model's input size."""
    folder = resolve_model_folder(folder_or_repo, revision=revision, token=token)
    config = check_model_folder(folder)
    try:
        model = AutoModel.from_pretrained(
            folder, config=config, trust_remote_code=False, use_safetensors=True
        )
        if (folder / "preprocessor_config.json").is_file():
            processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
        else:
            processor = ClarityImageProcessor(size=config.image_size)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as err:
        if isinstance(err, InvalidModelFolderError):
            raise
        raise InvalidModelFolderError(f"{folder}: cannot be loaded ({type(err).__name__}: {err})") from err
    _check_finite(folder, model)
    check_processor_size(folder, processor.size)
    if not isinstance(model, ClarityForMultiLabelLocalization) or not isinstance(
        processor, ClarityImageProcessor
    ):
        raise UntrustedModelFolderError(
            f"{folder}: loaded {type(model).__name__} / {type(processor).__name__}, not clarity_hf's classes"
        )
    return ClarityLocalizationPipeline(model=model.eval(), image_processor=processor, device=device)
