# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""CLARiTy model configuration.

CLARiTy (Class Localizing and Attention Refining Image Transformer, arXiv 2512.16700) is a ViT-S/16 with one
learnable class token per pathology. Fields whose values the paper's abstract does not state are *reconstructed*
choices (see the README, "What follows the paper and what is reconstructed"); each one is a field here so that a
user with the paper's full text can switch it.
"""

import math

from transformers import PretrainedConfig
from transformers.activations import ACT2FN
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The 14 NIH ChestX-ray14 pathologies in the order of Wang et al. 2017; the first 8 carry boxes.
NIH_PATHOLOGIES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NIH_BOXED_PATHOLOGIES = NIH_PATHOLOGIES[:8]
# Other spellings of NIH labels: the box list writes "Infiltrate" and some copies "Pleural Thickening".
NIH_LABEL_ALIASES = {"Infiltrate": "Infiltration", "Pleural Thickening": "Pleural_Thickening"}

LOGIT_COMBINATIONS = ("mean", "token", "pooled")
DISTILLATION_TYPES = ("soft", "hard")
HEATMAP_SOURCES = ("segment_cam", "attention")
PROBLEM_TYPES = ("multi_label_classification", "single_label_classification", "regression")


def _same_labels(label2id, mirrored: dict[str, int]) -> bool:
    """Whether `label2id` maps exactly the names of `mirrored` to the same indices (as ints or their strings)."""
    if not isinstance(label2id, dict) or set(map(str, label2id)) != set(mirrored):
        return False
    try:
        return all(int(label2id[name]) == mirrored[str(name)] for name in label2id)
    except (TypeError, ValueError):
        return False


class ClarityConfig(PretrainedConfig):
    r"""
    Configuration of a [`ClarityForMultiLabelLocalization`] model. The ViT fields follow [`ViTConfig`]; the defaults
    give CLARiTy-S-16-224 (ViT-S/16 with DINO's LayerNorm eps).

    Args:
        image_size (`int`, *optional*, defaults to 224): input side.
        patch_size (`int`, *optional*, defaults to 16): patch side.
        num_channels (`int`, *optional*, defaults to 3): input channels (grayscale X-rays are repeated to 3).
        hidden_size (`int`, *optional*, defaults to 384): token width D.
        num_hidden_layers (`int`, *optional*, defaults to 12): transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 6): heads per block.
        intermediate_size (`int`, *optional*, defaults to 1536): MLP width.
        hidden_act (`str`, *optional*, defaults to `"gelu"`): MLP activation.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0): dropout after attention / MLP projections.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0): dropout on attention probabilities.
        drop_path_rate (`float`, *optional*, defaults to 0.0): stochastic depth, linearly increasing over blocks.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the truncated-normal initialiser.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6): LayerNorm epsilon (DINO's value).
        qkv_bias (`bool`, *optional*, defaults to `True`): bias on the fused query/key/value projection.
        num_attention_map_layers (`int`, *optional*, defaults to 3): *reconstructed*. The class attention maps are
            the class-to-patch attention averaged over heads and over the last K blocks.
        attention_map_head_fusion (`str`, *optional*, defaults to `"mean"`): `"mean"` or `"max"` over heads.
        use_patch_affinity_refinement (`bool`, *optional*, defaults to `False`): MCTformer's patch-to-patch
            affinity refinement of the class maps (needs the full attention of the map layers; off by default).
        use_segment_cam (`bool`, *optional*, defaults to `True`): the SegmentCAM conv class head S and foreground
            head G (ablation switch).
        segment_cam_kernel_size (`int`, *optional*, defaults to 3): kernel of the SegmentCAM class head.
        foreground_hidden_size (`int`, *optional*, defaults to 128): width of the foreground head.
        use_anatomical_prior (`bool`, *optional*, defaults to `True`): train G against an anatomical prior (per-image
            masks when given, else the shipped population atlas) and gate heatmaps and pooling with G.
        anatomical_prior_size (`int`, *optional*, defaults to 64): side of the population atlas buffer.
        use_attention_pooling (`bool`, *optional*, defaults to `True`): per-class softmax pooling of patch tokens
            (ablation switch). When off, only the class-token logits are used.
        pooling_temperature (`float`, *optional*, defaults to 1.0): *reconstructed* tau of the pooling softmax.
        logit_combination (`str`, *optional*, defaults to `"mean"`): *reconstructed* `"mean"` of token and pooled
            logits at inference, or `"token"` / `"pooled"` alone.
        heatmap_source (`str`, *optional*, defaults to `"segment_cam"`): `"segment_cam"` gives
            normalise(sqrt(A * relu(S))) * G; `"attention"` gives the normalised class attention alone.
        class_token_loss_weight (`float`, *optional*, defaults to 1.0): BCE weight on the class-token logits.
        pooled_loss_weight (`float`, *optional*, defaults to 1.0): BCE weight on the pooled logits.
        distillation_loss_weight (`float`, *optional*, defaults to 0.5): *reconstructed* lambda of the multi-label
            distillation from the teacher (0 switches it off and the teacher is never run).
        distillation_temperature (`float`, *optional*, defaults to 1.0): *reconstructed* tau of the distillation.
        distillation_type (`str`, *optional*, defaults to `"soft"`): `"soft"` (BCE to the teacher's sigmoid) or
            `"hard"` (BCE to the teacher's thresholded predictions).
        orthogonal_loss_weight (`float`, *optional*, defaults to 0.1): *reconstructed* lambda of the orthogonal
            class-token loss (0 switches it off).
        foreground_loss_weight (`float`, *optional*, defaults to 0.5): lambda of the BCE + Dice foreground loss.
        pos_weight (`list[float]`, *optional*): per-class positive weights for the BCE (multi-label only).
        class_token_init (`str`, *optional*, defaults to `"cls_noise"`): *reconstructed* how the DINO conversion
            initialises the class tokens: `"cls_noise"` (DINO CLS token + N(0, class_token_init_std)) or
            `"trunc_normal"`.
        class_token_init_std (`float`, *optional*, defaults to 0.02): std of that noise / truncated normal.
        problem_type (`str`, *optional*, defaults to `"multi_label_classification"`): the supervised loss:
            `"multi_label_classification"` (BCE), `"single_label_classification"` (cross-entropy) or `"regression"`
            (MSE); `None` infers it from the labels as transformers' classification models do.

    The attention kernel is transformers' `attn_implementation`: `"sdpa"` by default (the class maps are computed
    with the C class-token query rows only) or `"eager"` (the full attention, the reference). Every value is checked
    here, so that a bad one fails at construction and at `from_pretrained` with a `ValueError` naming the field.
    """

    model_type = "clarity"

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        num_channels=3,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        num_attention_map_layers=3,
        attention_map_head_fusion="mean",
        use_patch_affinity_refinement=False,
        use_segment_cam=True,
        segment_cam_kernel_size=3,
        foreground_hidden_size=128,
        use_anatomical_prior=True,
        anatomical_prior_size=64,
        use_attention_pooling=True,
        pooling_temperature=1.0,
        logit_combination="mean",
        heatmap_source="segment_cam",
        class_token_loss_weight=1.0,
        pooled_loss_weight=1.0,
        distillation_loss_weight=0.5,
        distillation_temperature=1.0,
        distillation_type="soft",
        orthogonal_loss_weight=0.1,
        foreground_loss_weight=0.5,
        pos_weight=None,
        class_token_init="cls_noise",
        class_token_init_std=0.02,
        **kwargs,
    ):
        if "attn_implementation_maps" in kwargs:
            # Written by earlier versions; the kernel is transformers' `attn_implementation` now.
            legacy = kwargs.pop("attn_implementation_maps")
            if legacy != "sdpa":
                logger.warning(
                    f"attn_implementation_maps={legacy!r} is no longer read: pass attn_implementation={legacy!r}"
                )
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(NIH_PATHOLOGIES))
        kwargs.setdefault("problem_type", "multi_label_classification")
        super().__init__(**kwargs)
        # transformers 4.x stores id2label keys as ints, 5.x too; labels come from `id2label` in every case.
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.num_attention_map_layers = num_attention_map_layers
        self.attention_map_head_fusion = attention_map_head_fusion
        self.use_patch_affinity_refinement = use_patch_affinity_refinement
        self.use_segment_cam = use_segment_cam
        self.segment_cam_kernel_size = segment_cam_kernel_size
        self.foreground_hidden_size = foreground_hidden_size
        self.use_anatomical_prior = use_anatomical_prior
        self.anatomical_prior_size = anatomical_prior_size
        self.use_attention_pooling = use_attention_pooling
        self.pooling_temperature = pooling_temperature
        self.logit_combination = logit_combination
        self.heatmap_source = heatmap_source
        self.class_token_loss_weight = class_token_loss_weight
        self.pooled_loss_weight = pooled_loss_weight
        self.distillation_loss_weight = distillation_loss_weight
        self.distillation_temperature = distillation_temperature
        self.distillation_type = distillation_type
        self.orthogonal_loss_weight = orthogonal_loss_weight
        self.foreground_loss_weight = foreground_loss_weight
        self.pos_weight = list(pos_weight) if pos_weight is not None else None
        self.class_token_init = class_token_init
        self.class_token_init_std = class_token_init_std
        self._validate_clarity()

    def _validate_clarity(self):
        """Refuse every value the model cannot build or train with, naming the field and the value."""

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "segment_cam_kernel_size",
            "foreground_hidden_size",
            "anatomical_prior_size",
        ):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.segment_cam_kernel_size % 2 == 0:
            # An even kernel with padding k // 2 changes the grid: the maps would not match the patches.
            raise ValueError(f"segment_cam_kernel_size must be odd, got {self.segment_cam_kernel_size}")
        if (
            not is_int(self.num_attention_map_layers)
            or not 1 <= self.num_attention_map_layers <= self.num_hidden_layers
        ):
            raise ValueError(
                f"num_attention_map_layers must be in [1, {self.num_hidden_layers}], got {self.num_attention_map_layers!r}"
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(
                f"hidden_act must be one of transformers' activations {sorted(ACT2FN)}, got {self.hidden_act!r}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "pooling_temperature", "distillation_temperature"):
            value = getattr(self, name)
            if not is_number(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in (
            "initializer_range",
            "class_token_init_std",
            "class_token_loss_weight",
            "pooled_loss_weight",
            "distillation_loss_weight",
            "orthogonal_loss_weight",
            "foreground_loss_weight",
        ):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        for name, value, allowed in (
            ("logit_combination", self.logit_combination, LOGIT_COMBINATIONS),
            ("distillation_type", self.distillation_type, DISTILLATION_TYPES),
            ("heatmap_source", self.heatmap_source, HEATMAP_SOURCES),
            ("attention_map_head_fusion", self.attention_map_head_fusion, ("mean", "max")),
            ("class_token_init", self.class_token_init, ("cls_noise", "trunc_normal")),
            ("problem_type", self.problem_type, (None, *PROBLEM_TYPES)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not self.num_labels:
            raise ValueError(
                f"num_labels must be at least 1 (one class token per label), got {self.num_labels!r}"
            )
        if not self.use_attention_pooling and self.logit_combination != "token":
            self.logit_combination = "token"
        if self.pos_weight is not None:
            if len(self.pos_weight) != self.num_labels:
                raise ValueError(
                    f"pos_weight has {len(self.pos_weight)} entries for {self.num_labels} labels"
                )
            if not all(is_number(weight) and weight > 0 for weight in self.pos_weight):
                raise ValueError(f"pos_weight must hold positive numbers, got {self.pos_weight!r}")
            if self.problem_type not in (None, "multi_label_classification"):
                raise ValueError(
                    f"pos_weight weighs the multi-label BCE; it does not apply to problem_type={self.problem_type!r}"
                )

    def __setattr__(self, key, value):
        super().__setattr__(key, value)
        if key == "id2label" and value is not None:
            # One source of truth: label2id always mirrors id2label (presets, `num_labels=`, `from_pretrained(...,
            # id2label=...)` and assignment alike), so that the two never name different label sets. A label2id that
            # already names the same classes at the same indices is kept as given (its values may be strings).
            mirrored = {str(name): int(index) for index, name in dict(value).items()}
            if not _same_labels(getattr(self, "label2id", None), mirrored):
                super().__setattr__("label2id", mirrored)

    def to_diff_dict(self) -> dict:
        diff = super().to_diff_dict()
        # `None` (infer from the labels) differs from this class's multi-label default, though not from the base
        # class's: always write it so that it survives a save and load.
        diff["problem_type"] = self.problem_type
        return diff

    @property
    def pathologies(self) -> list[str]:
        return [self.id2label[i] for i in range(self.num_labels)]

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "ClarityConfig":
        """A named configuration: `clarity-s-16-224`, `clarity-s-16-512` or `clarity-tiny` (tests, CPU demo)."""
        if name not in CLARITY_PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(CLARITY_PRESETS)}")
        return cls(**{**CLARITY_PRESETS[name], **kwargs})


# `save_pretrained` writes `auto_map` and copies this file (as transformers' remote-code models do).
ClarityConfig.register_for_auto_class()

CLARITY_PRESETS = {
    "clarity-s-16-224": {"image_size": 224},
    "clarity-s-16-512": {"image_size": 512},
    # A small model for tests and the CPU demo: same structure, narrower and shallower.
    "clarity-tiny": {
        "image_size": 64,
        "patch_size": 8,
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "num_attention_map_layers": 2,
        "foreground_hidden_size": 16,
        "anatomical_prior_size": 32,
    },
}

__all__ = ["ClarityConfig", "CLARITY_PRESETS", "NIH_PATHOLOGIES", "NIH_BOXED_PATHOLOGIES"]
