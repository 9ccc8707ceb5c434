"""The model behaves like an in-tree transformers model: meta-device builds, transformers' gradient checkpointing,
the attention kernel chosen by `attn_implementation`, `problem_type` losses, config validation and torch.export."""

import json
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization

PIXELS = 64
NUM_LAYERS = 2
NUM_LABELS = 14
SEQ_LEN = NUM_LABELS + (PIXELS // 8) ** 2  # class tokens + 8x8 patches


def tiny_config(**overrides) -> ClarityConfig:
    overrides = {"num_hidden_layers": NUM_LAYERS, "num_attention_map_layers": NUM_LAYERS, **overrides}
    return ClarityConfig.from_preset("clarity-tiny", **overrides)


def make_model(config: ClarityConfig, seed: int = 0) -> ClarityForMultiLabelLocalization:
    torch.manual_seed(seed)
    return ClarityForMultiLabelLocalization(config).eval()


def pixels(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, PIXELS, PIXELS, generator=torch.Generator().manual_seed(seed))


def assert_same_outputs(actual, expected, atol: float = 0.0) -> None:
    for name in ("logits", "heatmaps", "class_attentions", "foreground", "token_logits", "pooled_logits"):
        torch.testing.assert_close(
            getattr(actual, name), getattr(expected, name), atol=atol, rtol=0, msg=name
        )


# ---------------------------------------------------------------------------------------------------------------
# Meta device
# ---------------------------------------------------------------------------------------------------------------


def _empty_torch_meta(config):
    with torch.device("meta"):
        return ClarityForMultiLabelLocalization(config)


def _empty_accelerate(config):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=True):
        return ClarityForMultiLabelLocalization(config)


@pytest.mark.parametrize("build", [_empty_torch_meta, _empty_accelerate], ids=["torch-meta", "accelerate"])
def test_builds_without_memory_then_loads_to_identical_outputs(build):
    config = tiny_config(drop_path_rate=0.1)  # the per-block drop-path rates are computed at construction
    reference = make_model(config)
    empty = build(config)
    tensors = list(empty.parameters()) + list(empty.buffers())
    assert tensors and all(tensor.device.type == "meta" for tensor in tensors)
    empty.load_state_dict(reference.state_dict(), assign=True)
    empty.eval()
    assert not [name for name, t in list(empty.named_parameters()) + list(empty.named_buffers()) if t.is_meta]
    with torch.no_grad():
        assert_same_outputs(empty(pixels()), reference(pixels()))


def test_meta_build_then_init_weights_restores_every_buffer():
    """What transformers does for a missing buffer: build on meta, allocate, run `init_weights()`."""
    config = tiny_config()
    reference = make_model(config)
    with torch.device("meta"):
        model = ClarityForMultiLabelLocalization(config)
    model.to_empty(device="cpu")
    model.init_weights()
    buffers = dict(model.named_buffers())
    assert sorted(buffers) == sorted(dict(reference.named_buffers())) == ["anatomical_prior"]
    for name, buffer in reference.named_buffers():
        assert torch.equal(buffers[name], buffer), name
    with torch.no_grad():
        assert torch.isfinite(model.eval()(pixels()).logits).all()


def test_from_pretrained_keeps_the_saved_atlas(tmp_path):
    model = make_model(tiny_config())
    atlas = torch.zeros(16, 16)
    atlas[4:12, 2:14] = 1
    model.set_anatomical_prior(atlas)
    model.save_pretrained(tmp_path)
    loaded = ClarityForMultiLabelLocalization.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.anatomical_prior, model.anatomical_prior)
    with torch.no_grad():
        assert_same_outputs(loaded(pixels()), model(pixels()))


# ---------------------------------------------------------------------------------------------------------------
# Gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------


def _step_gradients(model, pixel_values, labels):
    model.zero_grad(set_to_none=True)
    model(pixel_values, labels=labels, teacher_logits=torch.zeros_like(labels)).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_recomputes_blocks_and_keeps_gradients(use_reentrant):
    model = make_model(tiny_config()).train()
    assert model.supports_gradient_checkpointing
    pixel_values = pixels()
    labels = torch.randint(0, 2, (2, NUM_LABELS), generator=torch.Generator().manual_seed(2)).float()
    attention_calls = []
    for layer in model.clarity.encoder.layers:
        # A hook on a module inside the block: it runs again when the backward pass recomputes the block.
        layer.attention.register_forward_hook(lambda *_: attention_calls.append(1))

    expected = _step_gradients(model, pixel_values, labels)
    assert len(attention_calls) == NUM_LAYERS

    attention_calls.clear()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert all(layer.gradient_checkpointing for layer in model.clarity.encoder.layers)
    actual = _step_gradients(model, pixel_values, labels)
    assert len(attention_calls) == 2 * NUM_LAYERS  # forward + recomputation in backward
    assert sorted(actual) == sorted(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, atol=1e-6, rtol=0, msg=name)

    # Without gradients (evaluation inside a training loop) nothing is recomputed.
    attention_calls.clear()
    with torch.no_grad():
        model(pixel_values)
    assert len(attention_calls) == NUM_LAYERS
    model.gradient_checkpointing_disable()
    assert not any(layer.gradient_checkpointing for layer in model.clarity.encoder.layers)


# ---------------------------------------------------------------------------------------------------------------
# Attention kernels
# ---------------------------------------------------------------------------------------------------------------


class KernelCounter:
    """Counts SDPA calls and softmaxes over a full (L, L) attention while the model runs."""

    def __init__(self):
        self.sdpa_calls = 0
        self.full_softmaxes = 0
        self.other_softmax_shapes = []

    def __enter__(self):
        sdpa, softmax = F.scaled_dot_product_attention, F.softmax

        def counting_sdpa(*args, **kwargs):
            self.sdpa_calls += 1
            return sdpa(*args, **kwargs)

        def counting_softmax(input, *args, **kwargs):
            if input.dim() == 4 and tuple(input.shape[-2:]) == (SEQ_LEN, SEQ_LEN):
                self.full_softmaxes += 1
            else:
                self.other_softmax_shapes.append(tuple(input.shape))
            return softmax(input, *args, **kwargs)

        self._patches = [
            mock.patch("torch.nn.functional.scaled_dot_product_attention", counting_sdpa),
            mock.patch("torch.nn.functional.softmax", counting_softmax),
        ]
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *exc):
        for patch in reversed(self._patches):
            patch.stop()


def test_eager_and_sdpa_run_their_own_kernel_and_agree():
    sdpa = make_model(tiny_config())
    eager = make_model(tiny_config(attn_implementation="eager"))
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    pixel_values = pixels()
    with torch.no_grad():
        with KernelCounter() as sdpa_count:
            sdpa_out = sdpa(pixel_values)
        with KernelCounter() as eager_count:
            eager_out = eager(pixel_values)
    assert sdpa_count.sdpa_calls == NUM_LAYERS and sdpa_count.full_softmaxes == 0
    # the class maps of the sdpa path: one softmax of the C class queries over the L keys per map layer
    assert sdpa_count.other_softmax_shapes == [(2, 4, NUM_LABELS, SEQ_LEN)] * NUM_LAYERS
    assert eager_count.sdpa_calls == 0 and eager_count.full_softmaxes == NUM_LAYERS
    assert_same_outputs(sdpa_out, eager_out, atol=1e-5)
    assert sdpa_out.attentions is None and eager_out.attentions is None


def test_output_attentions_follows_transformers_models():
    sdpa = make_model(tiny_config())
    eager = make_model(tiny_config(attn_implementation="eager"))
    with torch.no_grad():
        eager_out = eager(pixels(), output_attentions=True, output_hidden_states=True)
        sdpa_out = sdpa(pixels(), output_attentions=True, output_hidden_states=True)
    assert len(eager_out.attentions) == NUM_LAYERS
    assert all(a.shape == (2, 4, SEQ_LEN, SEQ_LEN) for a in eager_out.attentions)
    # As transformers' own models under sdpa: a warning and no attention weights, never a silent eager fallback.
    assert sdpa_out.attentions == ()
    assert len(sdpa_out.hidden_states) == len(eager_out.hidden_states) == NUM_LAYERS + 1
    # get_last_selfattention gives the full attention of the last block under either kernel
    torch.testing.assert_close(
        sdpa.get_last_selfattention(pixels()), eager_out.attentions[-1], atol=1e-6, rtol=0
    )


def test_attn_implementation_from_pretrained_selects_the_kernel(tmp_path):
    make_model(tiny_config()).save_pretrained(tmp_path)
    model = ClarityForMultiLabelLocalization.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    with torch.no_grad(), KernelCounter() as count:
        model(pixels())
    assert count.sdpa_calls == 0 and count.full_softmaxes == NUM_LAYERS
    model.set_attn_implementation("sdpa")
    with torch.no_grad(), KernelCounter() as count:
        model(pixels())
    assert count.sdpa_calls == NUM_LAYERS and count.full_softmaxes == 0


@pytest.mark.parametrize("name", ["flash_attention_2", "flex_attention", "no_such_kernel"])
def test_unsupported_attention_implementations_name_what_is_supported(tmp_path, name):
    message = f'Specified `attn_implementation="{name}"` is not supported .*supported: "eager", "sdpa"'
    with pytest.raises(ValueError, match=message):
        ClarityForMultiLabelLocalization(tiny_config(attn_implementation=name))
    model = make_model(tiny_config())
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        ClarityForMultiLabelLocalization.from_pretrained(tmp_path, attn_implementation=name)
    with pytest.raises(ValueError, match=message):
        model.set_attn_implementation(name)
    # set behind the checks' back: the forward pass refuses it too
    model.config._attn_implementation = name
    with pytest.raises(ValueError, match='supported: "eager", "sdpa"'):
        model(pixels())


def test_patch_affinity_refinement_is_the_same_under_both_kernels():
    sdpa = make_model(tiny_config(use_patch_affinity_refinement=True))
    eager = make_model(tiny_config(use_patch_affinity_refinement=True, attn_implementation="eager"))
    with torch.no_grad():
        assert_same_outputs(sdpa(pixels()), eager(pixels()), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# problem_type
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "problem_type,num_labels,make_labels,torch_loss",
    [
        ("single_label_classification", 5, lambda: torch.tensor([0, 3, 4, 1]), nn.CrossEntropyLoss()),
        (
            "regression",
            3,
            lambda: torch.randn(4, 3, generator=torch.Generator().manual_seed(3)),
            nn.MSELoss(),
        ),
        ("regression", 1, lambda: torch.randn(4, generator=torch.Generator().manual_seed(3)), nn.MSELoss()),
    ],
)
def test_problem_type_trains_a_step_with_the_matching_torch_loss(
    problem_type, num_labels, make_labels, torch_loss
):
    labels = make_labels()
    # Only the supervised term: no pooled head, no label-free regularisers.
    config = tiny_config(
        num_labels=num_labels,
        problem_type=problem_type,
        use_attention_pooling=False,
        orthogonal_loss_weight=0.0,
        foreground_loss_weight=0.0,
    )
    model = make_model(config).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    out = model(pixels(4), labels=labels)
    expected = torch_loss(out.logits.squeeze(-1) if num_labels == 1 else out.logits, labels)
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.classification_loss, expected, atol=1e-6, rtol=1e-6)
    out.loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = model(pixels(4), labels=labels).loss
    assert after < out.loss


def test_problem_type_with_pooling_sums_both_heads_and_keeps_the_regularisers():
    config = tiny_config(num_labels=5, problem_type="single_label_classification")
    model = make_model(config)
    labels = torch.tensor([0, 3])
    out = model(pixels(), labels=labels)
    token = F.cross_entropy(out.token_logits, labels)
    pooled = F.cross_entropy(out.pooled_logits, labels)
    torch.testing.assert_close(out.classification_loss, token + pooled)
    expected = token + pooled + 0.1 * out.orthogonal_loss + 0.5 * out.foreground_loss
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="teacher_logits: the distillation term is defined for"):
        model(pixels(), labels=labels, teacher_logits=torch.zeros(2, 5))


@pytest.mark.parametrize(
    "num_labels,labels,inferred",
    [
        (5, torch.tensor([1, 2]), "single_label_classification"),
        (1, torch.tensor([0.5, -1.0]), "regression"),
        (5, torch.tensor([[0.0, 1, 0, 1, 0], [1, 0, 0, 0, 0]]), "multi_label_classification"),
    ],
)
def test_problem_type_none_is_inferred_as_transformers_does(num_labels, labels, inferred):
    model = make_model(tiny_config(num_labels=num_labels, problem_type=None))
    assert model.config.problem_type is None
    assert torch.isfinite(model(pixels(), labels=labels).loss)
    assert model.config.problem_type == inferred


def test_multi_label_default_keeps_pos_weight():
    weights = [float(i + 1) for i in range(NUM_LABELS)]
    config = tiny_config(pos_weight=weights, orthogonal_loss_weight=0.0, foreground_loss_weight=0.0)
    assert config.problem_type == "multi_label_classification"
    model = make_model(config)
    labels = torch.randint(0, 2, (2, NUM_LABELS), generator=torch.Generator().manual_seed(4)).float()
    out = model(pixels(), labels=labels)
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights))
    expected = criterion(out.token_logits, labels) + criterion(out.pooled_logits, labels)
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(
        ValueError, match="labels of shape \\(2,\\) for problem_type='multi_label_classification'"
    ):
        model(pixels(), labels=torch.tensor([1, 3]))


# ---------------------------------------------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------------------------------------------

BAD_VALUES = [
    ("hidden_size", -64),
    ("hidden_size", 0),
    ("hidden_size", 66),  # not a multiple of 4 heads
    ("num_attention_heads", 0),
    ("patch_size", 0),
    ("patch_size", -8),
    ("image_size", -64),
    ("image_size", 60),  # not a multiple of the patch size
    ("image_size", 64.0),
    ("num_hidden_layers", 0),
    ("intermediate_size", -1),
    ("num_channels", 0),
    ("hidden_act", "no_such_activation"),
    ("hidden_dropout_prob", 1.0),
    ("hidden_dropout_prob", -0.1),
    ("attention_probs_dropout_prob", float("nan")),
    ("drop_path_rate", 1.5),
    ("layer_norm_eps", 0.0),
    ("initializer_range", -0.02),
    ("pooling_temperature", 0.0),
    ("distillation_temperature", -1.0),
    ("orthogonal_loss_weight", -0.1),
    ("foreground_loss_weight", float("inf")),
    ("segment_cam_kernel_size", 2),
    ("anatomical_prior_size", 0),
    ("num_attention_map_layers", 3),  # more than the 2 layers
    ("problem_type", "ranking"),
    ("heatmap_source", "gradcam"),
    ("pos_weight", [1.0] * 3),
    ("pos_weight", [-1.0] * NUM_LABELS),
]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_bad_config_values_fail_at_construction_and_at_loading(tmp_path, field, value):
    with pytest.raises(ValueError, match=field) as error:
        tiny_config(**{field: value})
    if not isinstance(value, list):
        assert repr(value) in str(error.value) or str(value) in str(error.value)
    # the same value in a saved folder (hand-edited or written by another tool) fails at loading, not in torch
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    saved[field] = value
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=field):
        ClarityConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=field):
        ClarityConfig.from_dict(saved)


def test_single_label_pos_weight_and_legacy_keys():
    with pytest.raises(ValueError, match="pos_weight weighs the multi-label BCE"):
        tiny_config(num_labels=3, pos_weight=[1.0, 2.0, 3.0], problem_type="single_label_classification")
    # configs written by earlier versions carry `attn_implementation_maps`: still loadable
    config = ClarityConfig.from_dict({**tiny_config().to_dict(), "attn_implementation_maps": "sdpa"})
    assert not hasattr(config, "attn_implementation_maps")


def test_config_round_trips_and_accepts_transformers_common_kwargs(tmp_path):
    config = tiny_config(problem_type=None, output_hidden_states=True, return_dict=False, num_labels=3)
    config.save_pretrained(tmp_path)
    loaded = ClarityConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.problem_type is None and loaded.num_labels == 3 and loaded.output_hidden_states
    assert ClarityConfig().to_dict() == ClarityConfig.from_dict(ClarityConfig().to_dict()).to_dict()


# ---------------------------------------------------------------------------------------------------------------
# torch.export
# ---------------------------------------------------------------------------------------------------------------

EXPORTED = (
    "logits",
    "heatmaps",
    "class_attentions",
    "foreground",
    "segment_maps",
    "token_logits",
    "pooled_logits",
)


def _assert_exported_matches(exported_module, model, pixel_values):
    with torch.no_grad():
        actual = exported_module(pixel_values)
        expected = model(pixel_values)
    for name in EXPORTED:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=0, msg=name)


def test_torch_export_static_and_dynamic_batch():
    model = make_model(tiny_config())
    example = pixels(2)
    with torch.no_grad():
        static = torch.export.export(model, (example,))
    _assert_exported_matches(static.module(), model, example)

    batch = torch.export.Dim("batch", min=1, max=32)
    with torch.no_grad():
        dynamic = torch.export.export(model, (example,), dynamic_shapes={"pixel_values": {0: batch}})
    for size in (1, 3, 5):
        _assert_exported_matches(dynamic.module(), model, pixels(size, seed=size))
