"""The patch-sequence transformer on tiny configs (image 32, few layers)."""

from pathlib import Path

import pytest
import torch

from assistant.vision.model import (
    Lite0Stem,
    PatchTransformer,
    VisionConfig,
    load_lite0_imagenet,
)

TINY = {
    "patch": VisionConfig(image_size=32, stem="patch", patch_size=4, width=32, depth=2, heads=2),
    "hybrid": VisionConfig(image_size=32, stem="efficientnet_lite0", stem_stages=3, width=32,
                           depth=2, heads=2),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_shapes(name: str) -> None:
    cfg = TINY[name]
    model = PatchTransformer(cfg).eval()
    out = model(torch.rand(3, 1, 32, 32), keep_attention=True)
    assert out.logits.shape == (3, cfg.classes)
    assert out.tokens.shape == (3, cfg.num_patches, cfg.width)
    assert out.attentions is not None and len(out.attentions) == cfg.depth
    assert out.attentions[0].shape == (3, cfg.heads, cfg.num_patches + 1, cfg.num_patches + 1)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(3, cfg.heads, cfg.num_patches + 1))


@pytest.mark.parametrize("name", sorted(TINY))
def test_batch_independence_in_eval(name: str) -> None:
    model = PatchTransformer(TINY[name]).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        together = model(x).logits
        alone = torch.cat([model(x[i:i + 1]).logits for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_wrong_input_shape_says_what_was_expected() -> None:
    model = PatchTransformer(TINY["patch"])
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 32, 32\)"):
        model(torch.rand(2, 3, 32, 32))


def test_config_checks_and_round_trip() -> None:
    with pytest.raises(ValueError, match="not divisible by heads"):
        VisionConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="patch stride"):
        VisionConfig(image_size=100, stem="patch", patch_size=16)
    with pytest.raises(ValueError, match="unknown VisionConfig keys"):
        VisionConfig.from_dict({"image_size": 32, "bogus": 1})
    cfg = TINY["hybrid"]
    assert VisionConfig.from_dict(cfg.to_dict()) == cfg
    assert VisionConfig().stride == 16 and VisionConfig().num_patches == 64


def test_stem_stride_matches_config() -> None:
    for stages in (1, 2, 3, 4, 5):
        cfg = VisionConfig(image_size=64, stem_stages=stages, width=32, heads=2)
        feats = Lite0Stem(stages, 1)(torch.rand(1, 1, 64, 64))
        assert feats.shape[-1] == 64 // cfg.stride


@pytest.mark.data
def test_imagenet_weights_load_into_the_stem(settings_data_dir: Path) -> None:
    weights = settings_data_dir / "models/efficientnet-lite0/efficientnet-lite0-57934424.pth"
    source = torch.load(weights, map_location="cpu", weights_only=True)
    stem = Lite0Stem(5, 1)
    load_lite0_imagenet(stem, weights)
    first = next(m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)).weight
    assert torch.allclose(first, source["_conv_stem.weight"].sum(dim=1, keepdim=True))
    last_bn = [m for m in stem.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    assert torch.equal(last_bn.running_var, source["_blocks.10._bn2.running_var"])
