"""Transforms, collator and the preprocessing cache."""

import json
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, clarity_dataset_of_files, subprocess_env
from PIL import Image

from clarity_hf.data.cache import build_cache, load_cache, resize_for_cache
from clarity_hf.data.features import get_build_report, get_label_names
from clarity_hf.data.synthetic import build_synthetic_cxr
from clarity_hf.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClarityCollator,
    build_processor,
    eval_transform,
    train_transform,
    with_clarity_transform,
)
from clarity_hf.hub import make_dataset_card, push_dataset_to_hub


@pytest.fixture(scope="module")
def small():
    return build_synthetic_cxr(24, 4, 8, image_size=96, seed=5, num_proc=1)


def test_eval_transform_values(small):
    dataset = with_clarity_transform(small["train"], eval_transform(48))
    example = dataset[0]
    assert example["pixel_values"].shape == (3, 48, 48) and example["valid"] is True
    # The 8-bit image resized in float32 (bilinear, the model's recipe), not in uint8.
    source = np.asarray(small["train"][0]["image"], dtype=np.float32) / 255.0
    expected = np.asarray(Image.fromarray(source).resize((48, 48), Image.BILINEAR))
    channel = example["pixel_values"][1] * IMAGENET_STD[1] + IMAGENET_MEAN[1]
    np.testing.assert_allclose(channel.numpy(), np.clip(expected, 0, 1), atol=1e-6)
    for c in (0, 2):  # the grayscale image is repeated to 3 channels before normalisation
        np.testing.assert_allclose(
            example["pixel_values"][c] * IMAGENET_STD[c] + IMAGENET_MEAN[c], channel, atol=1e-5
        )
    assert (
        example["labels"].dtype == torch.float32 and example["labels"].tolist() == small["train"][0]["labels"]
    )
    mask = example["anatomy_masks"]
    assert mask.shape == (1, 48, 48) and set(mask.unique().tolist()) <= {0.0, 1.0} and 0.2 < mask.mean() < 0.8


def test_train_transform_augments_but_keeps_anatomy_aligned(small):
    transform = train_transform(64, seed=0)
    dataset = with_clarity_transform(small["train"], transform)
    first, second = dataset[3], dataset[3]
    assert not torch.equal(first["pixel_values"], second["pixel_values"])  # random crop / rotation / jitter
    eval_example = with_clarity_transform(small["train"], eval_transform(64))[3]
    assert (first["anatomy_masks"] != eval_example["anatomy_masks"]).float().mean() > 0.005
    # the mask gets exactly the image's geometry: an image equal to its own mask stays equal after augmentation
    geometric = train_transform(64, brightness=0.0, contrast=0.0, seed=3)
    mask_png = small["train"][3]["anatomy_mask"]
    for _ in range(5):
        out = geometric.transform_one(mask_png, mask_png, "self")
        image = out["pixel_values"][0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        assert ((image > 0.5).float() == out["anatomy_masks"][0]).float().mean() > 0.97
    # no horizontal flip: the heart (bright, image right of centre, lower half) stays on the right
    heart_side = []
    for _ in range(8):
        pixels = dataset[0]["pixel_values"][0]
        lower = pixels[32:56]
        heart_side.append(float(lower[:, 34:50].mean() - lower[:, 14:30].mean()))
    assert min(heart_side) > 0


def test_bad_images_are_marked_and_dropped(tmp_path, caplog):
    good = tmp_path / "good.png"
    Image.new("L", (32, 32), 128).save(good)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    transform = eval_transform(16)
    batch = {
        "image": [
            {"bytes": None, "path": str(good)},
            {"bytes": None, "path": str(tmp_path / "corrupt.png")},
            {"bytes": None, "path": str(tmp_path / "missing.png")},
            {"bytes": b"", "path": None},
        ],
        "labels": [[1.0, 0.0]] * 4,
        "image_id": ["good", "corrupt", "missing", "empty"],
    }
    out = transform(batch)
    assert out["valid"] == [True, False, False, False] and transform.num_invalid == 3
    assert torch.count_nonzero(out["pixel_values"][1]) == 0
    assert "bad image corrupt skipped" in caplog.text
    collator = ClarityCollator()
    examples = [{k: out[k][i] for k in out} for i in range(4)]
    collated = collator(examples)
    assert collated["pixel_values"].shape == (1, 3, 16, 16) and collated["labels"].shape == (1, 2)
    assert collator.num_dropped == 3 and collator.dropped_ids == ["corrupt", "missing", "empty"]
    assert collator(examples[1:]) is None and collator.num_dropped == 6


def test_per_sample_seeded_views_depend_only_on_seed_epoch_and_index(small):
    transform = train_transform(32, seed=7)
    features = small["train"].features
    rows = small["train"].cast_column("image", features["image"].__class__(decode=False))
    rows = rows.cast_column("anatomy_mask", features["anatomy_mask"].__class__(decode=False))
    images, masks = rows["image"], rows["anatomy_mask"]

    def view(epoch, index, seed=7):
        t = transform if seed == 7 else train_transform(32, seed=seed)
        return t.transform_one(images[index], masks[index], rng=t.sample_rng(epoch, index))

    first = view(0, 3)
    for _ in range(3):  # the transform's own stream advancing in between changes nothing
        transform.transform_one(images[1], masks[1])
    again = view(0, 3)
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert torch.equal(first["anatomy_masks"], again["anatomy_masks"])
    assert not torch.equal(first["pixel_values"], view(1, 3)["pixel_values"])  # another epoch
    assert not torch.equal(first["pixel_values"], view(0, 3, seed=8)["pixel_values"])  # another seed
    with pytest.raises(ValueError, match="seed"):
        train_transform(32).sample_rng(0, 0)
    # eval mode ignores the generator: the resize only
    plain = eval_transform(32)
    assert torch.equal(
        plain.transform_one(images[3], rng=np.random.default_rng(0))["pixel_values"],
        plain.transform_one(images[3])["pixel_values"],
    )


def test_collator_modes_for_distributed_loops(tmp_path):
    transform = eval_transform(8, invalid_on_bad_mask=True)
    good = {"bytes": _png_bytes(Image.new("L", (16, 16), 200)), "path": None}
    examples = [
        transform.transform_one(good, good, "a.png"),
        transform.transform_one({"bytes": None, "path": str(tmp_path / "gone.png")}, good, "gone.png"),
        transform.transform_one(good, {"bytes": b"junk", "path": None}, "b.png"),
    ]
    for index, example in enumerate(examples):
        example.update(labels=[1.0, 0.0], index=index, teacher_logits=[0.5, -0.5])
    assert [e["valid"] for e in examples] == [True, False, False]
    assert examples[1]["problem"] == "missing_file" and examples[2]["problem"] == "corrupt_image"
    assert "b.png (anatomy mask)" in examples[2]["where"]

    evaluation = ClarityCollator(keep_invalid=True, report_problems=True)(examples)
    assert evaluation["pixel_values"].shape == (3, 3, 8, 8) and evaluation["valid"].tolist() == [
        True,
        False,
        False,
    ]
    assert evaluation["index"].tolist() == [0, 1, 2] and evaluation["teacher_logits"].shape == (3, 2)
    assert evaluation["anatomy_masks"].shape == (3, 1, 8, 8)
    assert [p.split(":")[0] for p in evaluation["problems"]] == ["missing_file", "corrupt_image"]
    assert "gone.png" in evaluation["problems"][0]

    training = ClarityCollator(return_empty=True, report_problems=True)
    batch = training(examples)
    assert batch["pixel_values"].shape == (1, 3, 8, 8) and batch["index"].tolist() == [0]
    empty = training(examples[1:])
    assert empty["pixel_values"].shape == (0, 3, 8, 8) and empty["labels"].shape == (0, 2)
    assert empty["index"].shape == (0,) and len(empty["problems"]) == 2 and training.num_dropped == 4
    assert ClarityCollator()(examples[1:]) is None  # the default still signals an all-invalid batch


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_collator_counts_across_dataloader_workers(small, tmp_path):
    broken = (
        small["train"]
        .select(range(8))
        .cast_column("image", small["train"].features["image"].__class__(decode=False))
    )
    images = list(broken["image"])
    images[2] = {"bytes": b"garbage", "path": None}
    images[5] = {"bytes": b"garbage", "path": None}
    broken = broken.remove_columns("image").add_column("image", images, feature=broken.features["image"])
    dataset = with_clarity_transform(broken, train_transform(32, seed=1))
    collator = ClarityCollator()
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator)
    sizes = [batch["pixel_values"].shape[0] for batch in loader]
    assert sorted(sizes) == [3, 3] and collator.num_dropped == 2
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collator)))
    assert batch["anatomy_masks"].shape == (3, 1, 32, 32)


def test_cache_round_trip_and_resume(small, tmp_path):
    output = tmp_path / "cache"
    cached = build_cache(small, output, image_size=48, num_proc=2, shard_size=10, progress=False)
    assert [len(cached[s]) for s in ("train", "validation", "test")] == [24, 4, 8]
    assert cached["train"].features == small["train"].features
    assert get_label_names(cached) == get_label_names(small)
    for index in (0, 13, 23):
        fresh = np.asarray(resize_for_cache(small["train"][index]["image"], 48))
        np.testing.assert_array_equal(np.asarray(cached["train"][index]["image"]), fresh)
        for key in ("labels", "boxes", "image_id", "original_size", "box_split"):
            assert cached["train"][index][key] == small["train"][index][key]
    assert np.asarray(cached["train"][0]["anatomy_mask"]).shape == (48, 48)
    shards = sorted((output / "train").glob("*.parquet"))
    assert len(shards) == 3
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    again = build_cache(small, output, image_size=48, num_proc=1, shard_size=10, progress=False)
    assert stamps[shards[0]] == shards[0].stat().st_mtime_ns and shards[1].exists()
    assert list(again["train"]["image_id"]) == list(cached["train"]["image_id"])
    with pytest.raises(ValueError, match="image_size: 48 in the cache != 64 now"):
        build_cache(small, output, image_size=64, progress=False)
    # load_from_disk round trip of a built data set
    small.save_to_disk(tmp_path / "disk")
    from datasets import load_from_disk

    reloaded = load_from_disk(tmp_path / "disk")
    assert get_label_names(reloaded) == get_label_names(small) and reloaded["test"][0] == small["test"][0]


def test_cache_of_nih_like_pngs_and_bad_image(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray((np.arange(256 * 256).reshape(256, 256) * (i + 1) % 251).astype(np.uint8)).convert(
            "RGBA"
        ).save(path)
        paths.append(str(path))
    (tmp_path / "bad.png").write_bytes(b"nope")
    dataset = clarity_dataset_of_files(paths + [str(tmp_path / "bad.png")])
    with pytest.raises(ValueError, match="image 3.png cannot be decoded"):
        build_cache(dataset, tmp_path / "c1", image_size=32, progress=False)
    # The cache holds round(255 x) of the processor's image (decoded, resized bilinearly in float32).
    processor = build_processor(32)
    expected = processor(paths[1], do_normalize=False, return_tensors="np")["pixel_values"][0, 0]
    for image_format in ("png", "pgm"):
        cached = build_cache(
            dataset, tmp_path / image_format, 32, skip_missing=True, progress=False, image_format=image_format
        )
        assert len(cached["train"]) == 3 and get_build_report(cached).counts == {"undecodable_image": 1}
        stored = np.asarray(cached["train"][1]["image"])
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored, np.rint(expected * 255).astype(np.uint8))
        assert np.abs(stored / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
        assert json.loads((tmp_path / image_format / "clarity_cache.json").read_text())["pixels"].startswith(
            "uint8 = round(255 * x)"
        )
        assert cached["train"][1]["image"].format == {"png": "PNG", "pgm": "PPM"}[image_format]


def test_push_to_hub_is_mocked(small):
    card = make_dataset_card(small)
    assert "Atelectasis" in card and "| train | 24 |" in card
    with (
        mock.patch("datasets.DatasetDict.push_to_hub") as push,
        mock.patch("huggingface_hub.DatasetCard.load") as load,
    ):
        from huggingface_hub import DatasetCard

        existing = DatasetCard("---\ndataset_info:\n  features: []\n---\nold")
        load.return_value = existing
        with mock.patch.object(DatasetCard, "push_to_hub") as card_push:
            push_dataset_to_hub(small, "user/synthetic-cxr", token="x")
    push.assert_called_once()
    assert push.call_args.args[0] == "user/synthetic-cxr"
    card_push.assert_called_once()
    assert "Atelectasis" in existing.text and "dataset_info" in existing.data.to_dict()


def test_prepare_script_cli(tmp_path):
    from test_data_nih import write_mini_nih

    root = write_mini_nih(tmp_path / "nih", "nested")
    output = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "prepare_chestxray14.py"),
            str(root),
            str(output),
            "--image-size",
            "8",
            "--shard-size",
            "4",
            "--validation-fraction",
            "0.3",
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == {
        "train": summary["rows"]["train"],
        "validation": summary["rows"]["validation"],
        "test": 5,
    }
    cached = load_cache(output)
    assert np.asarray(cached["test"][0]["image"]).shape == (8, 8)
