# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Import DINO ViT-S/16 weights into a [`ClarityForMultiLabelLocalization`].

Three checkpoint layouts are understood (detected from the key names, after unwrapping `{"teacher": ...}`,
`{"model": ...}`, `{"state_dict": ...}`, ... and stripping `module.` / `backbone.` / `vit.` prefixes):

| part                | HF `ViTModel`, transformers 4.x / saved files | HF `ViTModel`, transformers >= 5.9 in memory | official DINO / timm |
|---------------------|-----------------------------------------------|----------------------------------------------|----------------------|
| CLS token           | `embeddings.cls_token`                        | same                                         | `cls_token`          |
| positions (1,1+N,D) | `embeddings.position_embeddings`              | same                                         | `pos_embed`          |
| patch conv          | `embeddings.patch_embeddings.projection`      | same                                         | `patch_embed.proj`   |
| pre-attention norm  | `encoder.layer.i.layernorm_before`            | `layers.i.layernorm_before`                  | `blocks.i.norm1`     |
| q, k, v             | `encoder.layer.i.attention.attention.query/key/value` | `layers.i.attention.q_proj/k_proj/v_proj` | `blocks.i.attn.qkv` |
| attention output    | `encoder.layer.i.attention.output.dense`      | `layers.i.attention.o_proj`                  | `blocks.i.attn.proj` |
| pre-MLP norm        | `encoder.layer.i.layernorm_after`             | `layers.i.layernorm_after`                   | `blocks.i.norm2`     |
| MLP                 | `encoder.layer.i.intermediate.dense`, `encoder.layer.i.output.dense` | `layers.i.mlp.fc1/fc2` | `blocks.i.mlp.fc1/fc2` |
| final norm          | `layernorm`                                   | same                                         | `norm`               |

(transformers 5.x renames the weights when loading, see `ViTModel` in `transformers/conversion_mapping.py`, and
writes the 4.x names back on `save_pretrained`; its in-memory `state_dict()` has the new names.)

Separate q, k, v projections are concatenated into CLARiTy's fused `qkv`. The patch position embeddings are
resampled once, bicubically in float32, from the checkpoint's grid (14 x 14 for 224) to the config's grid (32 x 32
for 512). The C class tokens replace DINO's CLS token (`config.class_token_init`): `"cls_noise"` sets every class
token to the CLS token plus N(0, `class_token_init_std`) noise from a seeded generator and every class position
embedding to the CLS position embedding; `"trunc_normal"` draws both from a truncated normal of that std. The heads
(token classifier, SegmentCAM, pooling) keep their random initialisation, and the anatomical prior buffer is set to
the shipped population atlas.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .configuration_clarity import ClarityConfig
from .modeling_clarity import ClarityForMultiLabelLocalization

logger = logging.getLogger(__name__)

LAYOUT_HF_VIT_4 = "hf_vit_4"
LAYOUT_HF_VIT_5 = "hf_vit_5"
LAYOUT_DINO = "dino"
# (width, patch) -> the Hub id of the DINO release with those weights
DINO_HUB_IDS = {
    (384, 16): "facebook/dino-vits16",
    (384, 8): "facebook/dino-vits8",
    (768, 16): "facebook/dino-vitb16",
    (768, 8): "facebook/dino-vitb8",
}

# Keys whose value is the wrapped state dict, in order of preference (DINO's own evaluation uses the teacher).
WRAPPER_KEYS = ("teacher", "model", "state_dict", "model_state_dict", "module", "student")
# Prefixes stripped from every key (DINO: `module.backbone.`; HF task models: `vit.`).
STRIP_PREFIXES = ("module.", "backbone.", "vit.", "_orig_mod.")
# File names tried, in order, when the checkpoint is a folder.
FOLDER_CANDIDATES = ("model.safetensors", "pytorch_model.bin", "checkpoint.pth", "model.pth", "model.pt")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

_LAYOUT_PROBES = {
    LAYOUT_DINO: "blocks.0.attn.qkv.weight",
    LAYOUT_HF_VIT_4: "encoder.layer.0.attention.attention.query.weight",
    LAYOUT_HF_VIT_5: "layers.0.attention.q_proj.weight",
}
_LAYER_PATTERNS = {
    LAYOUT_DINO: re.compile(r"^blocks\.(\d+)\."),
    LAYOUT_HF_VIT_4: re.compile(r"^encoder\.layer\.(\d+)\."),
    LAYOUT_HF_VIT_5: re.compile(r"^layers\.(\d+)\."),
}


@dataclass
class ConversionReport:
    """What a DINO conversion read and changed."""

    source: str
    layout: str
    used_keys: list[str] = field(default_factory=list)
    unused_keys: list[str] = field(default_factory=list)
    source_grid: int = 0
    target_grid: int = 0
    class_token_init: str = ""
    anatomical_prior: str = ""

    @property
    def resampled_position_embeddings(self) -> bool:
        return self.source_grid != self.target_grid

    def summary(self) -> str:
        resample = (
            f"resampled {self.source_grid}x{self.source_grid} -> {self.target_grid}x{self.target_grid} (bicubic)"
            if self.resampled_position_embeddings
            else f"kept {self.target_grid}x{self.target_grid}"
        )
        return (
            f"{self.source}: layout {self.layout}, {len(self.used_keys)} keys used, {len(self.unused_keys)} unused"
            f"{' (' + ', '.join(self.unused_keys[:8]) + (', ...' if len(self.unused_keys) > 8 else '') + ')' if self.unused_keys else ''}; "
            f"position embeddings {resample}; class tokens {self.class_token_init}; anatomical prior {self.anatomical_prior}"
        )


def _resolve_checkpoint_file(path: Path) -> list[Path]:
    """A checkpoint file, or the weight file(s) inside a folder."""
    if not path.exists():
        raise FileNotFoundError(f"DINO checkpoint {path} does not exist")
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / shard for shard in shards]
    for name in FOLDER_CANDIDATES:
        if (path / name).is_file():
            return [path / name]
    found = sorted(p for p in path.iterdir() if p.suffix in (".safetensors",) + TORCH_SUFFIXES)
    if len(found) == 1:
        return found
    raise ValueError(
        f"cannot find the weights in folder {path}: expected one of {FOLDER_CANDIDATES} or a single "
        f".safetensors/.pth/.pt file, found {[p.name for p in found] or 'none'}"
    )


def _torch_load(file: Path) -> object:
    """`torch.load(weights_only=True)`; DINO's full checkpoints also hold an `argparse.Namespace` of arguments."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    try:
        if safe_globals is not None:
            with safe_globals([argparse.Namespace]):
                return torch.load(file, map_location="cpu", weights_only=True)
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors have many types
        raise ValueError(
            f"cannot read {file} with torch.load(weights_only=True): {type(error).__name__}: {error}"
        ) from error


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Find the tensor state dict inside common checkpoint wrappers; strip `module.`/`backbone.`/`vit.` prefixes."""
    for _ in range(4):  # e.g. {"teacher": {...}} or {"model": {"state_dict": {...}}}
        if not isinstance(obj, Mapping) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state dict")
    state_dict = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        state_dict[key] = value
    if not state_dict:
        raise ValueError(f"{source} holds no tensors (top-level keys: {sorted(map(str, obj))[:10]})")
    return state_dict


def load_dino_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a DINO checkpoint (a safetensors / `.pth` / `.pt` / `.bin` file or a model folder) into a flat state dict
    with wrapper keys and `module.` / `backbone.` / `vit.` prefixes removed. Pickles are read only with
    `torch.load(weights_only=True)`."""
    path = Path(path)
    state_dict: dict[str, torch.Tensor] = {}
    for file in _resolve_checkpoint_file(path):
        if file.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                raw = load_file(str(file))
            except (SafetensorError, OSError) as error:
                raise ValueError(f"cannot read safetensors file {file}: {error}") from error
        elif file.suffix in TORCH_SUFFIXES:
            raw = _torch_load(file)
        else:
            raise ValueError(
                f"{file}: unsupported checkpoint type {file.suffix!r} (use .safetensors, .pth or .pt)"
            )
        state_dict.update(_unwrap(raw, str(file)))
    return state_dict


def detect_layout(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> str:
    """`"hf_vit_4"`, `"hf_vit_5"` or `"dino"` from the key names; a ValueError naming `source` otherwise."""
    found = [layout for layout, probe in _LAYOUT_PROBES.items() if probe in state_dict]
    if len(found) != 1:
        sample = sorted(state_dict)[:12]
        problem = "several layouts at once" if found else "an unknown layout"
        raise ValueError(
            f"{source} has {problem}: expected a DINO ViT with HF ViTModel keys (`{_LAYOUT_PROBES[LAYOUT_HF_VIT_4]}` "
            f"or `{_LAYOUT_PROBES[LAYOUT_HF_VIT_5]}`) or official DINO/timm keys (`{_LAYOUT_PROBES[LAYOUT_DINO]}`); "
            f"first keys: {sample}"
        )
    return found[0]


def _source_names(layout: str, layer: int) -> dict[str, str | tuple[str, str, str]]:
    """Our per-layer parameter suffix -> source key(s) (a q, k, v triple for the fused qkv)."""
    if layout == LAYOUT_DINO:
        base = f"blocks.{layer}."
        names = {
            "norm1": "norm1",
            "attention.qkv": "attn.qkv",
            "attention.proj": "attn.proj",
            "norm2": "norm2",
        }
        names |= {"mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    elif layout == LAYOUT_HF_VIT_4:
        base = f"encoder.layer.{layer}."
        qkv = tuple(f"attention.attention.{n}" for n in ("query", "key", "value"))
        names = {
            "norm1": "layernorm_before",
            "attention.qkv": qkv,
            "attention.proj": "attention.output.dense",
        }
        names |= {"norm2": "layernorm_after", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    else:
        base = f"layers.{layer}."
        qkv = tuple(f"attention.{n}_proj" for n in ("q", "k", "v"))
        names = {"norm1": "layernorm_before", "attention.qkv": qkv, "attention.proj": "attention.o_proj"}
        names |= {"norm2": "layernorm_after", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    return {
        ours: tuple(base + n for n in theirs) if isinstance(theirs, tuple) else base + theirs
        for ours, theirs in names.items()
    }


def _global_names(layout: str) -> dict[str, str]:
    if layout == LAYOUT_DINO:
        return {"cls": "cls_token", "pos": "pos_embed", "patch": "patch_embed.proj", "norm": "norm"}
    return {
        "cls": "embeddings.cls_token",
        "pos": "embeddings.position_embeddings",
        "patch": "embeddings.patch_embeddings.projection",
        "norm": "layernorm",
    }


def resample_position_embeddings(patch_positions: torch.Tensor, target_grid: int) -> torch.Tensor:
    """(1, g*g, D) patch position embeddings -> (1, target_grid**2, D), bicubic in float32 (align_corners=False),
    as the model's own `interpolate_pos_encoding`."""
    num_patches, dim = patch_positions.shape[-2:]
    grid = int(round(num_patches**0.5))
    if grid * grid != num_patches:
        raise ValueError(f"{num_patches} patch position embeddings do not form a square grid")
    positions = patch_positions.float().reshape(1, grid, grid, dim)
    if grid == target_grid:
        return positions.reshape(1, grid * grid, dim)
    positions = F.interpolate(
        positions.permute(0, 3, 1, 2), size=(target_grid, target_grid), mode="bicubic", align_corners=False
    )
    return positions.permute(0, 2, 3, 1).reshape(1, target_grid * target_grid, dim)


def convert_dino_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: ClarityConfig,
    source: str = "state dict",
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map a DINO state dict onto the backbone of a CLARiTy model (`clarity.*` keys, float32).

    Returns the CLARiTy backbone state dict and a [`ConversionReport`]. Raises a ValueError naming `source` for an
    unknown layout, missing keys, a different depth or a shape mismatch.
    """
    layout = detect_layout(state_dict, source)
    names = _global_names(layout)
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state_dict:
            raise ValueError(f"{source} ({layout} layout) is missing the key `{key}`")
        used.add(key)
        return state_dict[key].detach().to(dtype=torch.float32, device="cpu")

    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := _LAYER_PATTERNS[layout].match(k)))
    if depth != config.num_hidden_layers:
        raise ValueError(
            f"{source} has {depth} transformer blocks but the config expects {config.num_hidden_layers}"
        )

    out: dict[str, torch.Tensor] = {}
    prefix = "clarity."
    out[prefix + "embeddings.patch_embeddings.projection.weight"] = take(names["patch"] + ".weight")
    out[prefix + "embeddings.patch_embeddings.projection.bias"] = take(names["patch"] + ".bias")
    for layer in range(depth):
        for ours, theirs in _source_names(layout, layer).items():
            target = f"{prefix}encoder.layers.{layer}.{ours}"
            if ours == "attention.qkv" and not config.qkv_bias:
                bias_keys = [k + ".bias" for k in (theirs if isinstance(theirs, tuple) else (theirs,))]
                if any(k in state_dict for k in bias_keys):
                    raise ValueError(f"{source} has qkv biases but the config sets qkv_bias=False")
            if isinstance(theirs, tuple):
                out[target + ".weight"] = torch.cat([take(k + ".weight") for k in theirs], dim=0)
                if config.qkv_bias:
                    out[target + ".bias"] = torch.cat([take(k + ".bias") for k in theirs], dim=0)
            else:
                out[target + ".weight"] = take(theirs + ".weight")
                if ours != "attention.qkv" or config.qkv_bias:
                    out[target + ".bias"] = take(theirs + ".bias")
    out[prefix + "layernorm.weight"] = take(names["norm"] + ".weight")
    out[prefix + "layernorm.bias"] = take(names["norm"] + ".bias")

    cls_token = take(names["cls"]).reshape(1, 1, -1)  # (1, 1, D)
    positions = take(names["pos"])
    if positions.dim() != 3 or positions.shape[0] != 1:
        raise ValueError(
            f"{source}: position embeddings `{names['pos']}` have shape {tuple(positions.shape)}"
        )
    dim = cls_token.shape[-1]
    if dim != config.hidden_size or positions.shape[-1] != dim:
        raise ValueError(
            f"{source}: the checkpoint's width is {dim} (CLS token) / {positions.shape[-1]} (positions) but the "
            f"config's hidden_size is {config.hidden_size}"
        )
    cls_position, patch_positions = positions[:, :1], positions[:, 1:]  # (1, 1, D), (1, g*g, D)
    source_grid = int(round(patch_positions.shape[1] ** 0.5))
    if source_grid * source_grid != patch_positions.shape[1]:
        raise ValueError(
            f"{source}: {positions.shape[1]} position embeddings are not 1 CLS + a square grid of patches"
        )
    out[prefix + "embeddings.position_embeddings"] = resample_position_embeddings(
        patch_positions, config.grid_size
    )

    num_classes = config.num_labels
    std = float(config.class_token_init_std)
    generator = torch.Generator().manual_seed(seed)
    if config.class_token_init == "cls_noise":
        noise = torch.randn((1, num_classes, dim), generator=generator) * std
        out[prefix + "embeddings.class_tokens"] = cls_token.expand(1, num_classes, dim) + noise
        out[prefix + "embeddings.class_position_embeddings"] = cls_position.expand(
            1, num_classes, dim
        ).clone()
        init = f"= DINO CLS + N(0, {std:g}) noise (seed {seed}), positions = DINO CLS position"
    else:
        tokens, class_positions = torch.empty(1, num_classes, dim), torch.empty(1, num_classes, dim)
        torch.nn.init.trunc_normal_(tokens, std=std, generator=generator)
        torch.nn.init.trunc_normal_(class_positions, std=std, generator=generator)
        out[prefix + "embeddings.class_tokens"] = tokens
        out[prefix + "embeddings.class_position_embeddings"] = class_positions
        init = f"trunc_normal(std={std:g}) (seed {seed})"

    report = ConversionReport(
        source=source,
        layout=layout,
        used_keys=sorted(used),
        unused_keys=sorted(set(state_dict) - used),
        source_grid=source_grid,
        target_grid=config.grid_size,
        class_token_init=init,
    )
    return out, report


def convert_dino_checkpoint(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
    config: ClarityConfig,
    atlas: np.ndarray | torch.Tensor | str | None = "default",
    seed: int = 0,
    return_report: bool = False,
) -> ClarityForMultiLabelLocalization | tuple[ClarityForMultiLabelLocalization, ConversionReport]:
    """Build a [`ClarityForMultiLabelLocalization`] whose backbone holds DINO weights.

    Args:
        path_or_state_dict: a checkpoint file or folder (see [`load_dino_state_dict`]) or an in-memory state dict
            (e.g. `ViTModel.state_dict()`; wrappers and prefixes are handled the same way).
        config: the target configuration (e.g. `ClarityConfig.from_preset("clarity-s-16-512")`).
        atlas: the anatomical prior: `"default"` (the shipped thorax atlas), a 2-D map in [0, 1], or `None` to keep
            the model's analytic initial prior.
        seed: seeds the heads' random initialisation and the class-token noise.
        return_report: also return the [`ConversionReport`].
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        state_dict = _unwrap(path_or_state_dict, source)
    else:
        source = str(path_or_state_dict)
        state_dict = load_dino_state_dict(path_or_state_dict)
    converted, report = convert_dino_state_dict(state_dict, config, source=source, seed=seed)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClarityForMultiLabelLocalization(config)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("clarity.")}
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ValueError(f"{source}: the conversion gives no value for {missing}")
    for key, value in converted.items():
        if key not in expected:
            raise ValueError(f"{source}: converted key {key} does not exist in the CLARiTy model")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{source}: shape mismatch for {key}: the checkpoint gives {tuple(value.shape)}, the config "
                f"({config.hidden_size} wide, patch {config.patch_size}, image {config.image_size}) expects "
                f"{tuple(expected[key].shape)}; is this a different ViT size?"
            )
    model.load_state_dict(converted, strict=False)

    if model.anatomical_prior is None or atlas is None:
        report.anatomical_prior = "none" if model.anatomical_prior is None else "analytic (kept)"
    else:
        if isinstance(atlas, str):
            if atlas != "default":
                raise ValueError(f"atlas must be 'default', None or a 2-D array, got {atlas!r}")
            from .data.anatomy import load_default_atlas

            atlas = load_default_atlas()
            report.anatomical_prior = "shipped thorax atlas"
        else:
            report.anatomical_prior = "given map"
        model.set_anatomical_prior(torch.as_tensor(np.asarray(atlas), dtype=torch.float32))
    # what the backbone started from, for the model card's `base_model` (facebook's DINO releases on the Hub)
    model.config.base_model_id = DINO_HUB_IDS.get((int(config.hidden_size), int(config.patch_size)))
    model.eval()
    logger.info("DINO conversion: %s", report.summary())
    return (model, report) if return_report else model


__all__ = [
    "ConversionReport",
    "convert_dino_checkpoint",
    "convert_dino_state_dict",
    "detect_layout",
    "load_dino_state_dict",
    "resample_position_embeddings",
]
