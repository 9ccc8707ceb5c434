# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Grad-CAM (Selvaraju et al., ICCV 2017) for transformers image classifiers: the localization baseline that
CLARiTy is compared with (maps quality in the evaluation, cost in the benchmark).

For class c, with A (B, K, h, w) the activations of a target layer and y_c the class logit,

    alpha_c = mean over (h, w) of dy_c/dA            (B, K)
    CAM_c   = relu(sum_k alpha_c[k] * A[k])         (B, h, w), min-max normalised to [0, 1] per image

One forward pass, then one backward pass per class (`retain_graph=True`). Several target layers (e.g. every stage
of the encoder, to pick the one whose grid suits the evaluation) share that forward pass and those backward passes. By default the backward passes stop at
the target layer (`torch.autograd.grad` with respect to A only), which is the cheapest exact Grad-CAM;
`parameter_gradients=True` also computes every parameter's gradient, which reproduces the cost of the common
`loss.backward(retain_graph=True)` implementations (e.g. pytorch-grad-cam). Both give the same maps. `read` (a
(batch, classes) mask) asks for some maps only: a class no image reads gets no backward pass, and the maps not read
are NaN (the evaluation reads each boxed image's boxed classes only).

Example:

```python
from transformers import ConvNextV2Config, ConvNextV2ForImageClassification
from clarity_hf.baselines import GradCAM

teacher = ConvNextV2ForImageClassification(ConvNextV2Config(num_labels=14)).eval()
cam = GradCAM(teacher)  # target layer: the last stage of the ConvNeXt(V2) encoder
out = cam(pixel_values, class_indices=range(14))
out.heatmaps  # (B, 14, h, w) float32 in [0, 1]; h = w = image side / 32 for ConvNeXt
```
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..heatmaps import normalize_heatmaps


@dataclass
class GradCAMOutput:
    """
    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): the classifier's logits (detached).
        heatmaps (`torch.FloatTensor` of shape `(batch_size, len(class_indices), h, w)`): one map per requested
            class, float32, min-max normalised to [0, 1] per (image, class); a map that is zero everywhere after
            the ReLU stays all zeros.
        class_indices (`list[int]`): the classes of the heatmap channels, in order.
        layer_heatmaps (`list[torch.FloatTensor]`): the same maps for every target layer, in the order given (each
            at its layer's own grid); `heatmaps` is `layer_heatmaps[0]`.
        features (`torch.FloatTensor`, *optional*): the output of `feature_layer` in the same forward pass (detached),
            e.g. the last stage's feature map that CAM reads; None without a `feature_layer`.
    """

    logits: torch.Tensor
    heatmaps: torch.Tensor
    class_indices: list[int]
    layer_heatmaps: list[torch.Tensor] = field(default_factory=list)
    features: torch.Tensor | None = None


def default_target_layer(model: nn.Module) -> nn.Module:
    """The last stage of a ConvNeXt / ConvNeXtV2 classifier (`model.<base>.encoder.stages[-1]`)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    encoder = getattr(base, "encoder", None)
    stages = getattr(encoder, "stages", None)
    if stages is None or len(stages) == 0:
        raise ValueError(
            f"cannot find a default Grad-CAM target layer in {type(model).__name__}: pass `target_layer` "
            "(a module whose output is a (batch, channels, height, width) feature map)"
        )
    return stages[-1]


class GradCAM:
    """Grad-CAM maps for a list of classes from one forward pass and one backward pass per class.

    Args:
        model (`nn.Module`): an image classifier returning an output with `.logits` (B, num_labels) or a tensor.
            Use it in eval mode (BatchNorm / dropout); parameters need not require gradients.
        target_layer (`nn.Module` or a sequence of them, *optional*): the module(s) whose output feature map
            (B, K, h, w) is explained; defaults to the last encoder stage of a ConvNeXt(V2) model.
        parameter_gradients (`bool`, *optional*, defaults to `False`): also compute the gradients of all parameters
            that require them in each backward pass (the cost of the usual `loss.backward()` implementations).
        max_batch_pixels (`int`, *optional*, defaults to `2 * 512 * 512`): images are explained in chunks of at
            most this many input pixels (at least one image), because the graph kept for the backward passes grows
            with the batch: about 1.5 GB per 512 px image for ConvNeXtV2-B read from its first stage. The maps do
            not depend on the chunking (every image's logits depend on that image only).
        batched_gradients (`bool`, *optional*, defaults to `False`): compute the classes' gradients in one
            vectorised backward pass (`torch.autograd.grad(..., is_grads_batched=True)`) instead of one backward
            pass per class. Same maps up to float rounding; on CPU the loop was faster for ConvNeXtV2-B (see
            BENCHMARKS.md), so it is the default.
        feature_layer (`nn.Module`, *optional*): a module whose output is also returned (`features`), so a method
            that reads it (CAM: the last stage) shares this forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | Sequence[nn.Module] | None = None,
        parameter_gradients: bool = False,
        max_batch_pixels: int = 2 * 512 * 512,
        batched_gradients: bool = False,
        feature_layer: nn.Module | None = None,
    ):
        self.model = model
        if target_layer is None:
            target_layer = default_target_layer(model)
        self.target_layers = [target_layer] if isinstance(target_layer, nn.Module) else list(target_layer)
        if not self.target_layers:
            raise ValueError("no Grad-CAM target layer given")
        self.target_layer = self.target_layers[0]
        self.parameter_gradients = parameter_gradients
        if max_batch_pixels < 1:
            raise ValueError(f"max_batch_pixels must be >= 1, got {max_batch_pixels}")
        self.max_batch_pixels = int(max_batch_pixels)
        self.batched_gradients = batched_gradients
        self.feature_layer = feature_layer

    def __call__(
        self,
        pixel_values: torch.Tensor,
        class_indices: Iterable[int] | None = None,
        read: torch.Tensor | None = None,
    ) -> GradCAMOutput:
        """Maps of `class_indices` (default: every class) for each image of `pixel_values`.

        `read` (bool, (batch_size, len(class_indices)), *optional*) names the maps that are wanted: a class that no
        image reads gets no backward pass, and every map not read is NaN. Without it every map is computed."""
        classes = None if class_indices is None else list(class_indices)
        if read is not None:
            read = torch.as_tensor(read, dtype=torch.bool).cpu()
            if read.dim() != 2 or len(read) != len(pixel_values):
                raise ValueError(f"read must be (batch_size, classes), got {tuple(read.shape)}")
        per_image = pixel_values[0, 0].numel() if pixel_values.dim() == 4 and len(pixel_values) else 1
        chunk = max(1, self.max_batch_pixels // per_image)
        if len(pixel_values) <= chunk:
            return self._explain(pixel_values, classes, read)
        parts = [
            self._explain(part, classes, None if read is None else read[start : start + chunk])
            for start, part in zip(range(0, len(pixel_values), chunk), pixel_values.split(chunk))
        ]
        return GradCAMOutput(
            logits=torch.cat([part.logits for part in parts]),
            heatmaps=torch.cat([part.heatmaps for part in parts]),
            class_indices=parts[0].class_indices,
            layer_heatmaps=[torch.cat(maps) for maps in zip(*(part.layer_heatmaps for part in parts))],
            features=None if parts[0].features is None else torch.cat([part.features for part in parts]),
        )

    def _explain(
        self, pixel_values: torch.Tensor, class_indices: list[int] | None, read: torch.Tensor | None
    ) -> GradCAMOutput:
        captured: list[list[torch.Tensor]] = [[] for _ in self.target_layers]

        cut = not self.parameter_gradients
        reached: list[bool] = []

        def hook_for(slot: list[torch.Tensor]):
            def hook(module, inputs, output):
                feature_map = output[0] if isinstance(output, (tuple, list)) else output
                if cut and not reached:
                    # The maps need the graph from the first target map to the logits only: record nothing before
                    # it, so a batch of 32 at 512 px does not keep the whole network's activations (tens of GB for
                    # ConvNeXtV2-B). Later target maps stay downstream of it, so their gradients still flow.
                    reached.append(True)
                    feature_map = feature_map.detach().requires_grad_(True)
                    torch.set_grad_enabled(True)  # restored when the `set_grad_enabled` block below exits
                    slot.append(feature_map)
                    return (feature_map, *output[1:]) if isinstance(output, (tuple, list)) else feature_map
                slot.append(feature_map)

            return hook

        kept: list[torch.Tensor] = []
        # Registered first, so it sees the layer's own output even when the layer is also a (cut) target layer.
        handles = (
            [
                self.feature_layer.register_forward_hook(
                    lambda module, inputs, output: kept.append(
                        (output[0] if isinstance(output, (tuple, list)) else output).detach()
                    )
                )
            ]
            if self.feature_layer is not None
            else []
        )
        handles += [
            layer.register_forward_hook(hook_for(slot)) for layer, slot in zip(self.target_layers, captured)
        ]
        try:
            with torch.set_grad_enabled(not cut):
                if not cut:
                    pixel_values = pixel_values.detach().requires_grad_(True)
                outputs = self.model(pixel_values)
                logits = outputs.logits if hasattr(outputs, "logits") else outputs
        finally:
            for handle in handles:
                handle.remove()
        for slot in captured:
            if len(slot) != 1:
                raise RuntimeError(
                    f"a Grad-CAM target layer ran {len(slot)} times in one forward pass, expected 1"
                )
        activations = [slot[0] for slot in captured]
        features = kept[0] if kept else None
        for feature_map in activations:
            if feature_map.dim() != 4:
                raise ValueError(
                    "the Grad-CAM target layer must output (batch, channels, height, width), got "
                    f"{tuple(feature_map.shape)}"
                )
        if logits.dim() != 2:
            raise ValueError(f"the model's logits must be (batch, num_labels), got {tuple(logits.shape)}")

        num_labels = logits.shape[1]
        classes = list(range(num_labels)) if class_indices is None else [int(c) for c in class_indices]
        if not classes:
            raise ValueError("class_indices is empty")
        for index in classes:
            if not 0 <= index < num_labels:
                raise ValueError(f"class index {index} is out of range for {num_labels} labels")

        read = None if read is None else read.to(torch.bool)
        if read is not None and read.shape != (len(logits), len(classes)):
            raise ValueError(f"read must be ({len(logits)}, {len(classes)}), got {tuple(read.shape)}")
        # The classes some image reads: only those get a backward pass.
        active = [p for p in range(len(classes)) if read is None or bool(read[:, p].any())]
        parameters = (
            [p for p in self.model.parameters() if p.requires_grad] if self.parameter_gradients else []
        )
        gradients = self._gradients(logits, [classes[p] for p in active], activations, parameters)
        empty = [torch.zeros(feature_map.shape[0], *feature_map.shape[2:]) for feature_map in activations]
        maps: list[list[torch.Tensor]] = [[] for _ in activations]
        by_position = dict(zip(active, range(len(active))))
        for position in range(len(classes)):
            for layer, (layer_maps, feature_map) in enumerate(zip(maps, activations)):
                if position not in by_position:
                    layer_maps.append(empty[layer])
                    continue
                gradient = gradients[by_position[position]][layer]
                if gradient is None:  # the logit does not depend on this layer
                    gradient = torch.zeros_like(feature_map)
                weights = gradient.float().mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
                layer_maps.append(
                    torch.relu((weights * feature_map.detach().float()).sum(dim=1))
                )  # (B, h, w)
        layer_heatmaps = [
            normalize_heatmaps(torch.stack(layer_maps, dim=1)) for layer_maps in maps
        ]  # (B, C', h, w) each
        if read is not None:
            unread = ~read[:, :, None, None]
            layer_heatmaps = [maps.masked_fill(unread, float("nan")) for maps in layer_heatmaps]
        return GradCAMOutput(
            logits=logits.detach(),
            heatmaps=layer_heatmaps[0],
            class_indices=classes,
            layer_heatmaps=layer_heatmaps,
            features=None if features is None else features.detach(),
        )

    def _gradients(
        self,
        logits: torch.Tensor,
        classes: list[int],
        activations: list[torch.Tensor],
        parameters: list[torch.Tensor],
    ) -> list[list[torch.Tensor | None]]:
        """d(sum over the batch of logit c)/d(each activation) for each class c: one list per class. Each image's logit
        depends only on its own activations, so the batch sum gives per-image gradients."""
        if not classes:
            return []
        if self.batched_gradients and not parameters:
            # One vectorised backward pass for all classes (vmap over one-hot output gradients).
            grad_outputs = torch.zeros(len(classes), *logits.shape, dtype=logits.dtype)
            for k, index in enumerate(classes):
                grad_outputs[k, :, index] = 1
            batched = torch.autograd.grad(
                logits, activations, grad_outputs=grad_outputs, is_grads_batched=True, allow_unused=True
            )
            return [[None if g is None else g[k] for g in batched] for k in range(len(classes))]
        gradients = []
        for position, index in enumerate(classes):
            gradients.append(
                list(
                    torch.autograd.grad(
                        logits[:, index].sum(),
                        [*activations, *parameters],
                        retain_graph=position < len(classes) - 1,
                        allow_unused=True,
                    )[: len(activations)]
                )
            )
        return gradients


__all__ = ["GradCAM", "GradCAMOutput", "default_target_layer"]
