# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""PyTorch CLARiTy: a ViT with one class token per pathology, SegmentCAM with an anatomical prior, attention
pooling, an orthogonal class-token loss and multi-label distillation (arXiv 2512.16700).

One forward pass, top to bottom:
    pixel_values (B,3,S,S)
      -> ClarityEmbeddings: patches (B,N,D), C class tokens with their own positions -> (B,C+N,D)
      -> ClarityEncoder: pre-norm blocks through `config._attn_implementation` ("sdpa" by default, or "eager");
         the last K blocks also return the C class-token attention rows (B,H,C,N): under SDPA from the class
         queries alone, never a full (L,L) attention -> class maps A (B,C,h,w)
      -> final LayerNorm -> class tokens (B,C,D) and patch tokens (B,N,D)
    ClarityForMultiLabelLocalization:
      token logits      per-class linear on the class tokens                             (B,C)
      SegmentCAM        S = conv class head on the patch grid (B,C,h,w); G = sigmoid foreground head (B,1,h,w)
                        trained against the anatomical prior (per-image masks, else the shipped atlas)
      attention pooling softmax over patches of S/tau (gated by G) weights patch tokens -> LN -> per-class linear
      heatmaps          H = normalise(sqrt(A * relu(S))) * G                              (B,C,h,w)
      losses            by `config.problem_type`: BCE (multi-label), cross-entropy or MSE, on token + pooled
                        logits; distillation (multi-label only), orthogonal class tokens, foreground BCE + Dice

Imports only torch, transformers and its sibling Hub files (relatively), so that the file runs from the Hub; the
image processor and pipeline files are imported so that `save_pretrained` copies them too (transformers copies a
class's module and its relative imports) and the saved folder is complete.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, can_return_tuple, logging

from .configuration_clarity import ClarityConfig
from .heatmaps import normalize_heatmaps
from .image_processing_clarity import ClarityImageProcessor
from .pipeline_clarity import CUSTOM_PIPELINES

logger = logging.get_logger(__name__)

CLARITY_AUTO_MAP = {
    "AutoConfig": "configuration_clarity.ClarityConfig",
    "AutoModel": "modeling_clarity.ClarityForMultiLabelLocalization",
    "AutoModelForImageClassification": "modeling_clarity.ClarityForMultiLabelLocalization",
    "AutoModelForObjectDetection": "modeling_clarity.ClarityForMultiLabelLocalization",
}


@dataclass
class ClarityModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_labels + num_patches, hidden_size)`):
            Output of the final LayerNorm; the first `num_labels` tokens are the class tokens.
        class_token_states (`torch.FloatTensor` of shape `(batch_size, num_labels, hidden_size)`): the class tokens.
        patch_token_states (`torch.FloatTensor` of shape `(batch_size, num_patches, hidden_size)`): the patch tokens.
        class_attentions (`torch.FloatTensor` of shape `(batch_size, num_labels, grid, grid)`):
            Class-to-patch attention, fused over heads and averaged over the last `num_attention_map_layers` blocks.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): embeddings + every block's output.
        attentions (`tuple(torch.FloatTensor)`, *optional*): every block's full attention (B,H,L,L) (eager).
    """

    last_hidden_state: torch.FloatTensor | None = None
    class_token_states: torch.FloatTensor | None = None
    patch_token_states: torch.FloatTensor | None = None
    class_attentions: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ClarityMultiLabelLocalizationOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): weighted sum of the loss terms below.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): the combined logits (pre-sigmoid).
        heatmaps (`torch.FloatTensor` of shape `(batch_size, num_labels, grid, grid)`): class heatmaps in [0, 1].
        class_attentions (`torch.FloatTensor` of shape `(batch_size, num_labels, grid, grid)`): raw class maps A.
        foreground (`torch.FloatTensor` of shape `(batch_size, 1, grid, grid)`, *optional*): SegmentCAM's G.
        segment_maps (`torch.FloatTensor` of shape `(batch_size, num_labels, grid, grid)`, *optional*): S.
        token_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): logits of the class tokens.
        pooled_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*): attention pooling.
        classification_loss, distillation_loss, orthogonal_loss, foreground_loss (`torch.FloatTensor`, *optional*):
            each loss term, unweighted, in float32.
        hidden_states, attentions: as in [`ClarityModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    heatmaps: torch.FloatTensor | None = None
    class_attentions: torch.FloatTensor | None = None
    foreground: torch.FloatTensor | None = None
    segment_maps: torch.FloatTensor | None = None
    token_logits: torch.FloatTensor | None = None
    pooled_logits: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    orthogonal_loss: torch.FloatTensor | None = None
    foreground_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def drop_path(input: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth per sample (as in timm and transformers' ViT-family models)."""
    if drop_prob == 0.0 or not training:
        return input
    keep_prob = 1 - drop_prob
    shape = (input.shape[0],) + (1,) * (input.ndim - 1)
    random_tensor = keep_prob + torch.rand(shape, dtype=input.dtype, device=input.device)
    return input.div(keep_prob) * random_tensor.floor_()


class ClarityDropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return drop_path(hidden_states, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class ClarityPatchEmbeddings(nn.Module):
    """(B, 3, H, W) pixels -> (B, N, D) patch embeddings with a strided convolution."""

    def __init__(self, config: ClarityConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.num_channels}, height, width), got {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size ({height}x{width}) is not a multiple of the patch size {self.patch_size}"
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, N, D)


class ClarityEmbeddings(nn.Module):
    """C class tokens (each with its own position embedding) followed by the patch tokens."""

    def __init__(self, config: ClarityConfig):
        super().__init__()
        self.num_class_tokens = config.num_labels
        self.grid_size = config.image_size // config.patch_size
        self.class_tokens = nn.Parameter(torch.zeros(1, config.num_labels, config.hidden_size))
        self.class_position_embeddings = nn.Parameter(torch.zeros(1, config.num_labels, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid_size**2, config.hidden_size))
        self.patch_embeddings = ClarityPatchEmbeddings(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Patch position embeddings for a (height x width) patch grid: bicubic resampling in float32."""
        if height == self.grid_size and width == self.grid_size:
            return self.position_embeddings
        dim = self.position_embeddings.shape[-1]
        grid = self.position_embeddings.reshape(1, self.grid_size, self.grid_size, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(height, width), mode="bicubic", align_corners=False)
        return grid.to(self.position_embeddings.dtype).permute(0, 2, 3, 1).reshape(1, height * width, dim)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch_size = pixel_values.shape[0]
        patch_size = self.patch_embeddings.patch_size
        grid_h, grid_w = pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size
        patches = self.patch_embeddings(pixel_values.to(self.patch_embeddings.projection.weight.dtype))
        if not interpolate_pos_encoding and (grid_h, grid_w) != (self.grid_size, self.grid_size):
            # As transformers' ViT: another size is a preprocessing mistake unless the caller asks for it.
            side = self.grid_size * patch_size
            raise ValueError(
                f"Input image size ({pixel_values.shape[-2]}*{pixel_values.shape[-1]}) doesn't match model "
                f"({side}*{side}): resize to the model's image_size (its image processor does), or pass "
                "interpolate_pos_encoding=True to interpolate the position embeddings"
            )
        patches = patches + self.interpolate_pos_encoding(grid_h, grid_w)  # (B, N, D)
        class_tokens = (self.class_tokens + self.class_position_embeddings).expand(
            batch_size, -1, -1
        )  # (B, C, D)
        return self.dropout(torch.cat([class_tokens, patches], dim=1))  # (B, C+N, D)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference attention, as `modeling_vit.eager_attention_forward`: the full (B, H, L, L) probabilities.

    The probabilities are returned before attention dropout, so that the class maps read from them do not depend on
    the kernel in training either."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, L, L)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_output = torch.matmul(F.dropout(attn_weights, p=dropout, training=module.training), value)
    attn_output = attn_output.transpose(1, 2).contiguous()  # (B, L, H, d)
    return attn_output, attn_weights


# The kernels this model runs; every other name fails with this list (the class maps need no kernel support: they
# are computed from the class queries alone).
SUPPORTED_ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


def unsupported_attention_message(attn_implementation, model_name: str = "CLARiTy") -> str:
    # Begins as transformers' own message for an unknown kernel name.
    supported = ", ".join(f'"{name}"' for name in SUPPORTED_ATTENTION_IMPLEMENTATIONS)
    return f'Specified `attn_implementation="{attn_implementation}"` is not supported by {model_name}; supported: {supported}'


def get_attention_function(attn_implementation: str | None) -> Callable:
    if attn_implementation in (None, "eager"):
        return eager_attention_forward
    if attn_implementation not in SUPPORTED_ATTENTION_IMPLEMENTATIONS:
        raise ValueError(unsupported_attention_message(attn_implementation))
    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        return ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)
    return ALL_ATTENTION_FUNCTIONS[attn_implementation]  # transformers before get_interface


class ClaritySelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection; the kernel is `config._attn_implementation`.

    A map layer's attention (`is_map_layer`, the last `config.num_attention_map_layers` blocks) also returns the
    class-to-patch attention (B, H, C, N) of the C = `config.num_labels` class tokens. With the eager kernel it is
    read from the full attention; with any other kernel it is the softmax of the class-token query rows only,
    (B, H, C, L), so that no (L, L) attention is ever built. With `config.use_patch_affinity_refinement` a map layer
    runs the eager kernel, whose full attention the refinement reads.
    """

    def __init__(self, config: ClarityConfig, is_map_layer: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.is_map_layer = is_map_layer
        self.num_class_tokens = config.num_labels
        self.needs_full_attention = is_map_layer and config.use_patch_affinity_refinement
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def query_key_value(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, D) -> query, key and value, each (B, H, L, d)."""
        batch_size, seq_len, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, seq_len, 3, self.num_heads, self.head_dim)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def class_attention(
        self, query: torch.Tensor, key: torch.Tensor, attn_weights: torch.Tensor | None
    ) -> torch.Tensor:
        """The class-to-patch attention (B, H, C, N): from the full attention when the eager kernel built it, else
        from the C class-token query rows alone."""
        num_class_tokens = self.num_class_tokens
        if attn_weights is not None:
            return attn_weights[:, :, :num_class_tokens, num_class_tokens:]
        class_scores = torch.matmul(query[:, :, :num_class_tokens], key.transpose(2, 3)) * self.scaling
        return F.softmax(class_scores, dim=-1, dtype=torch.float32)[..., num_class_tokens:]

    def forward(
        self, hidden_states: torch.Tensor, return_class_attention: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the output (B, L, D), the full attention (B, H, L, L) when the eager kernel ran, and the class
        attention (B, H, C, N) in a map layer unless `return_class_attention=False` (else `None`)."""
        batch_size, seq_len, dim = hidden_states.shape
        query, key, value = self.query_key_value(hidden_states)  # each (B, H, L, d)
        attention_function = get_attention_function(
            "eager" if self.needs_full_attention else self.config._attn_implementation
        )
        context, attn_weights = attention_function(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )  # (B, L, H, d), (B, H, L, L) or None
        class_attention = (
            self.class_attention(query, key, attn_weights)
            if self.is_map_layer and return_class_attention
            else None
        )
        output = self.proj_dropout(self.proj(context.reshape(batch_size, seq_len, dim)))
        return output, attn_weights, class_attention


class ClarityMLP(nn.Module):
    def __init__(self, config: ClarityConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class ClarityLayer(GradientCheckpointingLayer):
    """A pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x)), with stochastic depth.

    As a `GradientCheckpointingLayer` it is recomputed in the backward pass after `gradient_checkpointing_enable()`
    (the hidden states must be passed positionally for `use_reentrant=True`)."""

    def __init__(self, config: ClarityConfig, drop_path_rate: float = 0.0, is_map_layer: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ClaritySelfAttention(config, is_map_layer=is_map_layer)
        self.drop_path = ClarityDropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ClarityMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, return_class_attention: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the block's output, its full attention (eager kernel) and its class attention (map layer; a
        caller that needs only the output, such as a logits-only pass, skips it)."""
        attention_output, attn_weights, class_attention = self.attention(
            self.norm1(hidden_states), return_class_attention
        )
        hidden_states = hidden_states + self.drop_path(attention_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))
        return hidden_states, attn_weights, class_attention


def drop_path_rates(drop_path_rate: float, num_layers: int) -> list[float]:
    """Stochastic-depth rate of each block, rising linearly from 0 (plain Python: the model builds on `meta`)."""
    if num_layers < 2:
        return [0.0] * num_layers
    return [drop_path_rate * index / (num_layers - 1) for index in range(num_layers)]


@dataclass
class ClarityEncoderOutput(BaseModelOutput):
    """
    [`BaseModelOutput`] plus what the map layers return.

    Args:
        class_attentions (`tuple(torch.FloatTensor)`): the class-to-patch attention `(batch_size, num_heads,
            num_labels, num_patches)` of each map layer.
        map_layer_attentions (`tuple(torch.FloatTensor)`, *optional*): the full attention `(batch_size, num_heads,
            sequence_length, sequence_length)` of each map layer, with `config.use_patch_affinity_refinement`.
    """

    class_attentions: tuple[torch.FloatTensor, ...] | None = None
    map_layer_attentions: tuple[torch.FloatTensor, ...] | None = None


class ClarityEncoder(nn.Module):
    def __init__(self, config: ClarityConfig):
        super().__init__()
        self.config = config
        rates = drop_path_rates(config.drop_path_rate, config.num_hidden_layers)
        first_map_layer = config.num_hidden_layers - config.num_attention_map_layers
        self.layers = nn.ModuleList(
            [
                ClarityLayer(config, rate, is_map_layer=index >= first_map_layer)
                for index, rate in enumerate(rates)
            ]
        )

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> ClarityEncoderOutput:
        # Attentions only from the eager kernel, as in transformers' models: empty under any other kernel.
        keep_attentions = output_attentions and self.config._attn_implementation in (None, "eager")
        class_attentions, map_layer_attentions = (), ()
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights, class_attention = layer(hidden_states)
            if class_attention is not None:
                class_attentions += (class_attention,)
            if layer.attention.needs_full_attention:
                map_layer_attentions += (attn_weights,)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if keep_attentions:
                all_attentions += (attn_weights,)
        return ClarityEncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            class_attentions=class_attentions,
            map_layer_attentions=map_layer_attentions or None,
        )


class ClarityPerClassLinear(nn.Module):
    """One linear classifier per class: (B, C, D) -> (B, C), logit_c = <x_c, w_c> + b_c."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_classes, hidden_size))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features * self.weight).sum(dim=-1) + self.bias


class ClaritySegmentCAM(nn.Module):
    """SegmentCAM: a conv class head S (B,C,h,w) and a conv foreground head G (B,1,h,w) on the patch grid."""

    def __init__(self, config: ClarityConfig):
        super().__init__()
        kernel = config.segment_cam_kernel_size
        self.class_head = nn.Conv2d(config.hidden_size, config.num_labels, kernel, padding=kernel // 2)
        self.foreground_head = None
        if config.use_anatomical_prior:
            self.foreground_head = nn.Sequential(
                nn.Conv2d(config.hidden_size, config.foreground_hidden_size, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(config.foreground_hidden_size, 1, 1),
            )

    def forward(self, patch_grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        segment_maps = self.class_head(patch_grid)  # (B, C, h, w)
        foreground = (
            torch.sigmoid(self.foreground_head(patch_grid)) if self.foreground_head is not None else None
        )
        return segment_maps, foreground


def default_anatomical_prior(size: int) -> torch.Tensor:
    """A smooth analytic thorax prior (two lung fields and the heart) of shape (1, 1, size, size) in [0, 1].

    It is only the initial value of the model's `anatomical_prior` buffer: the DINO conversion replaces it with the
    population atlas built from real lung masks, and the buffer is saved with the weights.
    """
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> torch.Tensor:
        distance = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        return torch.sigmoid((1.0 - distance) * 8.0)

    lungs = torch.maximum(ellipse(0.32, 0.48, 0.15, 0.30), ellipse(0.68, 0.48, 0.15, 0.30))
    heart = ellipse(0.55, 0.62, 0.14, 0.12)
    return torch.maximum(lungs, heart)[None, None]


def orthogonal_class_token_loss(class_tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cosine similarity of the L2-normalised class tokens (B, C, D), per image."""
    tokens = F.normalize(class_tokens.float(), dim=-1)
    gram = tokens @ tokens.transpose(1, 2)  # (B, C, C)
    num_classes = gram.shape[-1]
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=gram.device)
    return gram[:, off_diagonal].pow(2).mean()


def foreground_loss(foreground: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """BCE + soft Dice of G (B, 1, h, w) against the prior M (B, 1, h, w), both in [0, 1], in float32."""
    foreground, target = foreground.float().clamp(1e-6, 1 - 1e-6), target.float()
    bce = F.binary_cross_entropy(foreground, target)
    intersection = (foreground * target).flatten(1).sum(-1)
    dice = 1 - (2 * intersection + eps) / (foreground.flatten(1).sum(-1) + target.flatten(1).sum(-1) + eps)
    return bce + dice.mean()


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    problem_type: str | None,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """One logit set's supervised term in float32, as transformers' `ForSequenceClassificationLoss`: MSE
    (regression), cross-entropy over the C logits (single-label) or BCE with `pos_weight` (multi-label)."""
    logits = logits.float()
    if problem_type == "regression":
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(), labels.float().squeeze())
        return F.mse_loss(logits, labels.float())
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} for problem_type='multi_label_classification': multi-hot labels "
            f"of shape {tuple(logits.shape)} expected (class indices need problem_type='single_label_classification')"
        )
    return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=pos_weight)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, kind: str = "soft"
) -> torch.Tensor:
    """Multi-label distillation: soft tau^2 * BCE(sigmoid(z_s/tau), sigmoid(z_t/tau)); hard BCE(z_s, z_t > 0)."""
    student_logits, teacher_logits = student_logits.float(), teacher_logits.detach().float()
    if kind == "hard":
        return F.binary_cross_entropy_with_logits(student_logits, (teacher_logits > 0).float())
    targets = torch.sigmoid(teacher_logits / temperature)
    return temperature**2 * F.binary_cross_entropy_with_logits(student_logits / temperature, targets)


class ClarityPreTrainedModel(PreTrainedModel):
    config_class = ClarityConfig
    config: ClarityConfig
    base_model_prefix = "clarity"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ClarityEmbeddings", "ClarityLayer"]
    _supports_sdpa = True
    # Flash and flex kernels are not tested with the class-row maps: refused (see SUPPORTED_ATTENTION_IMPLEMENTATIONS).
    _supports_flash_attn = False
    _supports_flex_attn = False

    def _check_and_adjust_attn_implementation(self, attn_implementation, *args, **kwargs):
        # Refuse what this model does not run with the list of what it does, before transformers' generic checks
        # (which would e.g. report a missing flash-attn package for a kernel this model never uses).
        if (
            isinstance(attn_implementation, str)
            and attn_implementation not in SUPPORTED_ATTENTION_IMPLEMENTATIONS
        ):
            raise ValueError(unsupported_attention_message(attn_implementation, type(self).__name__))
        return super()._check_and_adjust_attn_implementation(attn_implementation, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            # ViT's and DINOv2's truncated normal, drawn once (the base class's plain normal is not drawn first, so
            # that a seeded build gives the same weights as before).
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            return
        super()._init_weights(module)  # LayerNorm: ones and zeros
        if isinstance(module, ClarityEmbeddings):
            for parameter in (
                module.class_tokens,
                module.class_position_embeddings,
                module.position_embeddings,
            ):
                nn.init.trunc_normal_(parameter, mean=0.0, std=std)
        elif isinstance(module, ClarityPerClassLinear):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ClarityForMultiLabelLocalization) and module.anatomical_prior is not None:
            # The buffer's value from __init__, also after a build on `meta` + `to_empty()`; a loaded atlas is kept.
            if not getattr(module.anatomical_prior, "_is_hf_initialized", False):
                module.anatomical_prior.copy_(default_anatomical_prior(module.anatomical_prior.shape[-1]))

    @property
    def pathologies(self) -> list[str]:
        """The label names, in logit order."""
        return [self.config.id2label[i] for i in range(self.config.num_labels)]


class ClarityModel(ClarityPreTrainedModel):
    """The CLARiTy backbone: embeddings, encoder and final LayerNorm; returns class tokens, patch tokens and the
    class attention maps."""

    def __init__(self, config: ClarityConfig):
        super().__init__(config)
        self.embeddings = ClarityEmbeddings(config)
        self.encoder = ClarityEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> ClarityPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> ClarityModelOutput:
        r"""
        interpolate_pos_encoding (`bool`, *optional*): accept an input of another size than `config.image_size`
            (a multiple of the patch size) by interpolating the patch position embeddings; without it such an
            input is a `ValueError`.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        if output_attentions and config._attn_implementation not in (None, "eager"):
            # As transformers' models do: only the eager kernel returns attention weights.
            logger.warning_once(
                f"`{config._attn_implementation}` attention does not support `output_attentions=True`: no attentions "
                'are returned. Load the model with `attn_implementation="eager"` to get them.'
            )

        embeddings = self.embeddings(
            pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding)
        )  # (B, C+N, D)
        encoder_outputs = self.encoder(
            embeddings, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        sequence_output = self.layernorm(encoder_outputs.last_hidden_state)  # (B, C+N, D)
        grid = (pixel_values.shape[-2] // config.patch_size, pixel_values.shape[-1] // config.patch_size)
        num_classes = config.num_labels
        return ClarityModelOutput(
            last_hidden_state=sequence_output,
            class_token_states=sequence_output[:, :num_classes],
            patch_token_states=sequence_output[:, num_classes:],
            class_attentions=self._class_maps(encoder_outputs, grid),
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )

    def _class_maps(self, encoder_outputs: ClarityEncoderOutput, grid: tuple[int, int]) -> torch.Tensor:
        """The class maps A (B, C, h, w): the map layers' class attention fused over heads, averaged over layers,
        and (with `use_patch_affinity_refinement`, MCTformer) propagated along the patch-to-patch affinity."""
        stacked = torch.stack(encoder_outputs.class_attentions)  # (K, B, H, C, N)
        fused = stacked.amax(dim=2) if self.config.attention_map_head_fusion == "max" else stacked.mean(dim=2)
        class_maps = fused.mean(dim=0)  # (B, C, N)
        if encoder_outputs.map_layer_attentions:
            num_classes = self.config.num_labels
            patch_affinities = [
                weights[:, :, num_classes:, num_classes:] for weights in encoder_outputs.map_layer_attentions
            ]
            affinity = torch.stack(patch_affinities).float().mean(dim=(0, 2))  # (B, N, N)
            class_maps = class_maps @ affinity
        return class_maps.reshape(-1, self.config.num_labels, *grid)  # (B, C, h, w)

    @torch.no_grad()
    def get_last_selfattention(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """DINO's idiom: the full attention (B, H, L, L) of the last block, tokens ordered [class tokens, patches].
        The last block's attention is computed with the eager kernel whatever `attn_implementation` is."""
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        for layer in self.encoder.layers[:-1]:
            hidden_states = layer(hidden_states)[0]
        last = self.encoder.layers[-1]
        query, key, value = last.attention.query_key_value(last.norm1(hidden_states))
        return eager_attention_forward(
            last.attention, query, key, value, None, scaling=last.attention.scaling
        )[1]


class ClarityForMultiLabelLocalization(ClarityPreTrainedModel):
    """CLARiTy with its heads: multi-label logits for the C pathologies and one heatmap per pathology."""

    def __init__(self, config: ClarityConfig):
        super().__init__(config)
        self.clarity = ClarityModel(config)
        self.token_classifier = ClarityPerClassLinear(config.num_labels, config.hidden_size)
        self.segment_cam = ClaritySegmentCAM(config) if config.use_segment_cam else None
        if config.use_attention_pooling:
            self.pooled_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.pooled_classifier = ClarityPerClassLinear(config.num_labels, config.hidden_size)
        else:
            self.pooled_norm = self.pooled_classifier = None
        if config.use_segment_cam and config.use_anatomical_prior:
            size = config.anatomical_prior_size
            self.register_buffer("anatomical_prior", default_anatomical_prior(size), persistent=True)
        else:
            self.anatomical_prior = None
        self.post_init()

    def get_last_selfattention(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        return self.clarity.get_last_selfattention(pixel_values, interpolate_pos_encoding)

    @property
    def pos_weight(self) -> torch.Tensor | None:
        """The multi-label BCE's per-class positive weights (C,), read from `config.pos_weight`: kept in the config,
        not a tensor of the model, so that the model builds on `meta` and loads without it."""
        if not self.config.pos_weight:
            return None
        return torch.tensor(self.config.pos_weight, dtype=torch.float32, device=self.device)

    @pos_weight.setter
    def pos_weight(self, value: torch.Tensor | list[float] | None) -> None:
        weights = None if value is None else [float(w) for w in torch.as_tensor(value).flatten().tolist()]
        self.config.pos_weight = weights

    @torch.no_grad()
    def set_anatomical_prior(self, prior: torch.Tensor) -> None:
        """Replace the population atlas (any (H, W) map in [0, 1]; resampled to the buffer's size)."""
        if self.anatomical_prior is None:
            raise ValueError(
                "this model has no anatomical prior (use_segment_cam and use_anatomical_prior are off)"
            )
        prior = torch.as_tensor(prior, dtype=torch.float32)
        if prior.dim() != 2 or prior.min() < 0 or prior.max() > 1:
            raise ValueError(f"the prior must be a 2-D map in [0, 1], got shape {tuple(prior.shape)}")
        size = self.anatomical_prior.shape[-1]
        resized = F.interpolate(prior[None, None], size=(size, size), mode="bilinear", align_corners=False)
        self.anatomical_prior.copy_(resized.to(self.anatomical_prior))

    def _foreground_target(self, anatomy_masks: torch.Tensor | None, batch_size: int, size) -> torch.Tensor:
        """Per-image masks (B,1,H,W) or (B,H,W) when given, else the atlas, as area fractions on the grid."""
        if anatomy_masks is not None:
            masks = anatomy_masks.float()
            masks = masks[:, None] if masks.dim() == 3 else masks
            return F.adaptive_avg_pool2d(masks, size)  # (B, 1, h, w)
        atlas = F.interpolate(self.anatomical_prior.float(), size=size, mode="bilinear", align_corners=False)
        return atlas.expand(batch_size, -1, -1, -1)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained`, writing a complete model folder: `auto_map` for every auto class this
        model serves (AutoModel, AutoModelForImageClassification, AutoModelForObjectDetection), `custom_pipelines`
        (`chest-xray-localization` and `image-classification`, the package's own pipeline classes), the Hub code
        files (this file and its relative imports: configuration, image processor, pipeline, `xray_io`,
        `heatmaps`), and, when the folder has none yet, a `preprocessor_config.json` of the default
        `ClarityImageProcessor` at the model's `image_size` (a processor saved later replaces it)."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **CLARITY_AUTO_MAP}
        # A copy: transformers' pipeline factory rewrites the entries it reads in place.
        self.config.custom_pipelines = {task: dict(entry) for task, entry in CUSTOM_PIPELINES.items()}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        is_main_process = kwargs.get("is_main_process", True)
        if is_main_process and not os.path.isfile(os.path.join(save_directory, "preprocessor_config.json")):
            ClarityImageProcessor(size=self.config.image_size).save_pretrained(save_directory)
        return result

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        anatomy_masks: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> ClarityMultiLabelLocalizationOutput:
        r"""
        labels (`torch.Tensor`, *optional*): the targets for `config.problem_type` (inferred as in transformers'
            classification models when `None`): `"multi_label_classification"`, multi-hot `(batch_size,
            num_labels)` for a BCE with `config.pos_weight`; `"single_label_classification"`, class indices
            `(batch_size,)` for a cross-entropy; `"regression"`, `(batch_size, num_labels)` values for an MSE. The
            term is computed on the token logits and on the pooled logits, weighted by `class_token_loss_weight` and
            `pooled_loss_weight`. The orthogonal and foreground terms apply to every problem type.
        teacher_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*): the frozen teacher's
            logits on the same augmented view, for the (multi-label, sigmoid) distillation term; refused for the
            other problem types.
        anatomy_masks (`torch.FloatTensor` of shape `(batch_size, 1, height, width)`, *optional*): per-image
            anatomical masks (lungs + heart) in [0, 1]; without them the model's atlas is the foreground target.
        """
        outputs = self.clarity(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        class_maps = outputs.class_attentions  # (B, C, h, w)
        token_logits = self.token_classifier(outputs.class_token_states)  # (B, C)
        segment_maps = foreground = None
        if self.segment_cam is not None:
            patch_grid = outputs.patch_token_states.transpose(1, 2).reshape(
                class_maps.shape[0], -1, *class_maps.shape[-2:]
            )  # (B, D, h, w)
            segment_maps, foreground = self.segment_cam(patch_grid)  # (B, C, h, w), (B, 1, h, w)
        pooled_logits = self._pooled_logits(outputs.patch_token_states, class_maps, segment_maps, foreground)
        logits = self._combine_logits(token_logits, pooled_logits)

        losses = {}
        if labels is not None or teacher_logits is not None:
            losses = self._compute_loss(
                token_logits,
                pooled_logits,
                logits,
                outputs.class_token_states,
                foreground,
                labels=labels,
                teacher_logits=teacher_logits,
                anatomy_masks=anatomy_masks,
            )
        return ClarityMultiLabelLocalizationOutput(
            **losses,
            logits=logits,
            heatmaps=self._heatmaps(class_maps, segment_maps, foreground),
            class_attentions=class_maps,
            foreground=foreground,
            segment_maps=segment_maps,
            token_logits=token_logits,
            pooled_logits=pooled_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _pooled_logits(
        self,
        patch_tokens: torch.Tensor,
        class_maps: torch.Tensor,
        segment_maps: torch.Tensor | None,
        foreground: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """Attention pooling (B, C): a per-class softmax over patches of S/tau (or of log A without SegmentCAM),
        gated by G, weights the patch tokens (B, N, D); then LayerNorm and a per-class linear."""
        if self.pooled_classifier is None:
            return None
        temperature = self.config.pooling_temperature
        if segment_maps is not None:
            scores = segment_maps.flatten(2).float() / temperature  # (B, C, N)
        else:
            scores = class_maps.flatten(2).float().clamp_min(1e-8).log() / temperature
        if foreground is not None:
            scores = scores + foreground.flatten(2).float().clamp_min(1e-6).log()
        weights = scores.softmax(dim=-1).to(patch_tokens.dtype)  # (B, C, N)
        return self.pooled_classifier(self.pooled_norm(weights @ patch_tokens))  # (B, C)

    def _combine_logits(self, token_logits: torch.Tensor, pooled_logits: torch.Tensor | None) -> torch.Tensor:
        """The output logits by `config.logit_combination`: token, pooled, or their mean."""
        combination = self.config.logit_combination
        if combination == "token" or pooled_logits is None:
            return token_logits
        if combination == "pooled":
            return pooled_logits
        return (token_logits + pooled_logits) / 2

    def _heatmaps(
        self, class_maps: torch.Tensor, segment_maps: torch.Tensor | None, foreground: torch.Tensor | None
    ) -> torch.Tensor:
        """H = normalise(sqrt(A * relu(S))) * G (B, C, h, w), in float32; A alone without SegmentCAM."""
        if segment_maps is not None and self.config.heatmap_source == "segment_cam":
            raw = torch.sqrt(class_maps.float() * F.relu(segment_maps.float()) + 1e-12)
        else:
            raw = class_maps.float()
        heatmaps = normalize_heatmaps(raw)
        return heatmaps * foreground.float() if foreground is not None else heatmaps

    def _infer_problem_type(self, labels: torch.Tensor) -> None:
        """As transformers' classification models do: infer once from the labels and keep it in the config."""
        if self.config.num_labels == 1:
            self.config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            self.config.problem_type = "single_label_classification"
        else:
            self.config.problem_type = "multi_label_classification"

    def _compute_loss(
        self,
        token_logits: torch.Tensor,
        pooled_logits: torch.Tensor | None,
        logits: torch.Tensor,
        class_tokens: torch.Tensor,
        foreground: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        anatomy_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """The weighted `loss` and its unweighted terms (`classification_loss` on the token + pooled logits,
        `distillation_loss`, `orthogonal_loss`, `foreground_loss`), every one in float32, also under autocast
        (mixed-precision training, bf16 inference)."""
        config = self.config
        if labels is not None and config.problem_type is None:
            self._infer_problem_type(labels)
        if (
            teacher_logits is not None
            and config.distillation_loss_weight > 0
            and config.problem_type not in (None, "multi_label_classification")
        ):
            raise ValueError(
                f"teacher_logits: the distillation term is defined for problem_type='multi_label_classification' "
                f"only, this model has problem_type={config.problem_type!r} (set distillation_loss_weight=0)"
            )
        terms = dict.fromkeys(
            ("classification_loss", "distillation_loss", "orthogonal_loss", "foreground_loss")
        )
        with torch.autocast(device_type=token_logits.device.type, enabled=False):
            loss = torch.zeros((), device=token_logits.device, dtype=torch.float32)
            if labels is not None:
                pos_weight = self.pos_weight
                terms["classification_loss"] = classification_loss(
                    token_logits, labels, config.problem_type, pos_weight
                )
                loss = loss + config.class_token_loss_weight * terms["classification_loss"]
                if pooled_logits is not None:
                    pooled_term = classification_loss(pooled_logits, labels, config.problem_type, pos_weight)
                    terms["classification_loss"] = terms["classification_loss"] + pooled_term
                    loss = loss + config.pooled_loss_weight * pooled_term
            if teacher_logits is not None and config.distillation_loss_weight > 0:
                terms["distillation_loss"] = distillation_loss(
                    logits, teacher_logits, config.distillation_temperature, config.distillation_type
                )
                loss = loss + config.distillation_loss_weight * terms["distillation_loss"]
            if config.orthogonal_loss_weight > 0 and config.num_labels > 1:
                terms["orthogonal_loss"] = orthogonal_class_token_loss(class_tokens)
                loss = loss + config.orthogonal_loss_weight * terms["orthogonal_loss"]
            if foreground is not None and config.foreground_loss_weight > 0:
                target = self._foreground_target(anatomy_masks, foreground.shape[0], foreground.shape[-2:])
                terms["foreground_loss"] = foreground_loss(foreground, target)
                loss = loss + config.foreground_loss_weight * terms["foreground_loss"]
        return {"loss": loss, **terms}


# `save_pretrained` copies this file and its relative imports next to the weights (transformers' remote-code
# mechanism); the `auto_map` it writes covers every auto class (above).
ClarityForMultiLabelLocalization.register_for_auto_class("AutoModel")

__all__ = [
    "ClarityPreTrainedModel",
    "ClarityModel",
    "ClarityForMultiLabelLocalization",
    "ClarityModelOutput",
    "ClarityEncoderOutput",
    "ClarityMultiLabelLocalizationOutput",
    "CLARITY_AUTO_MAP",
]
