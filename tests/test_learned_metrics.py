"""dit_fx.metrics' learned metrics: CLIP score (torchmetrics + transformers), LPIPS (lpips) and the
FID Inception network (torch-fidelity), each on weights made here and read from a path.

LPIPS and Inception need torchvision importable with this torch (the CPU machines here have only
a CUDA torchvision build, which does not import): those two tests skip where it fails and run on
the GPU machine (``benchmarks/results/learned_metrics_h200.log``)."""

import importlib
import json

import pytest
import torch

from dit_fx import metrics


def _importable(module):
    try:
        importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001  a torchvision built for another torch raises RuntimeError
        return False


def _tiny_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {t: i for i, t in enumerate(letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=16)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return model, CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def test_clip_score_is_torchmetrics_on_a_local_model(tmp_path):
    pytest.importorskip("torchmetrics")
    model, processor = _tiny_clip(tmp_path)
    torch.manual_seed(1)
    images = torch.rand(3, 3, 32, 32)
    prompts = ["a red dress", "boots", "a shirt"]
    got = metrics.clip_score(images, prompts, tmp_path)
    # the same score by hand: max(mean of 100 * cos(image embedding, text embedding), 0)
    pixels = [(im * 255).round().to(torch.uint8) for im in images]
    batch = processor(text=prompts, images=pixels, return_tensors="pt", padding=True)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=batch["pixel_values"])
        txt = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    expected = max(float((100 * torch.nn.functional.cosine_similarity(img, txt)).mean()), 0.0)
    assert expected > 0 and got == pytest.approx(expected, rel=1e-4, abs=1e-3)
    uint8 = metrics.clip_score((images * 255).round().to(torch.uint8), prompts, tmp_path)
    assert uint8 == pytest.approx(got, rel=1e-5)
    with pytest.raises(ValueError, match="prompts"):
        metrics.clip_score(images, prompts[:2], tmp_path)


def test_missing_weights_name_the_path(tmp_path):
    missing = tmp_path / "nothing.pth"
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        metrics.load_lpips(missing)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        metrics.InceptionFeatures(missing)
    with pytest.raises(FileNotFoundError, match="config.json"):
        metrics.clip_score(torch.rand(1, 3, 8, 8), ["x"], tmp_path)
    with pytest.raises(ValueError, match="net"):
        metrics.load_lpips(missing, net="resnet")


@pytest.mark.skipif(not _importable("lpips"), reason="lpips / torchvision does not import with this torch")
def test_lpips_loads_every_weight_from_the_file(tmp_path):
    import lpips

    torch.manual_seed(0)
    made = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the constructor's init: the load must carry them
    torch.save(made.state_dict(), tmp_path / "lpips_alex.pth")
    model = metrics.load_lpips(tmp_path / "lpips_alex.pth")
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    got = metrics.lpips_distance(a, b, model)
    with torch.no_grad():
        expected = made(a, b, normalize=True).flatten().double()
    torch.testing.assert_close(got, expected)
    assert got.shape == (2,) and bool((got > 0).all())
    assert float(metrics.lpips_distance(a, a, model).abs().max()) < 1e-6


@pytest.mark.skipif(not _importable("torch_fidelity"), reason="torch-fidelity / torchvision does not import with this torch")
def test_inception_features_feed_fid(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    Net = fidelity.FeatureExtractorInceptionV3
    torch.manual_seed(0)
    with monkeypatch.context() as m:  # a random network: no URL read, no file yet
        m.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(Net, "load_state_dict", lambda self, state, *a, **k: None)
        made = Net("inception-v3-compat", ["2048"])
    torch.save(made.state_dict(), tmp_path / "inception.pth")
    feats = metrics.InceptionFeatures(tmp_path / "inception.pth")
    real, fake = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    got = feats(real)
    expected = made((real * 255).round().to(torch.uint8))[0].reshape(4, -1)
    torch.testing.assert_close(got, expected)
    assert got.shape == (4, 2048)
    assert abs(metrics.fid(real, real, feats)) < 1e-6 and metrics.fid(real, fake, feats) > 0


def _two_folders(tmp_path, n=3, size=32):
    from PIL import Image

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    rng = torch.Generator().manual_seed(2)
    for i in range(n):
        img = (torch.rand(size, size, 3, generator=rng) * 255).to(torch.uint8)
        Image.fromarray(img.numpy()).save(a / f"{i}.png")
        noisy = (img.float() + 40 * torch.rand(size, size, 3, generator=rng)).clamp(0, 255).to(torch.uint8)
        Image.fromarray(noisy.numpy()).save(b / f"{i}.png")
    return a, b


def test_cli_clip_score_of_both_folders(tmp_path):
    pytest.importorskip("torchmetrics")
    clip = tmp_path / "clip"
    clip.mkdir()
    _tiny_clip(clip)
    a, b = _two_folders(tmp_path)
    prompts = {"0.png": "a bag", "1.png": "a coat", "2.png": "sandals"}
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "m.json"
    result = metrics.main([str(a), str(b), "--clip", str(clip), "--prompts", str(tmp_path / "prompts.json"),
                           "--json", str(out)])
    names = sorted(prompts)
    expected_a = metrics.clip_score([str(a / n) for n in names], [prompts[n] for n in names], clip)
    expected_b = metrics.clip_score([str(b / n) for n in names], [prompts[n] for n in names], clip)
    assert result.learned["clip_score_a"] == pytest.approx(expected_a, rel=1e-6)
    assert result.learned["clip_score_b"] == pytest.approx(expected_b, rel=1e-6)
    assert expected_a != expected_b  # the noise moved the images
    assert json.loads(out.read_text())["learned"]["clip_score_a"] == pytest.approx(expected_a, rel=1e-6)
    (tmp_path / "prompts.json").write_text(json.dumps({"0.png": "a bag"}))
    with pytest.raises(ValueError, match="prompts: no prompt for \\['1.png', '2.png'\\]"):
        metrics.main([str(a), str(b), "--clip", str(clip), "--prompts", str(tmp_path / "prompts.json")])
    with pytest.raises(ValueError, match="prompts: --clip needs --prompts"):
        metrics.main([str(a), str(b), "--clip", str(clip)])


class _FakeLpips(torch.nn.Module):
    """Stands in for lpips.LPIPS in the CLI's wiring test: mean absolute difference per pair."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, y, normalize=False):
        return (self.w * (x - y).abs()).flatten(1).mean(1).reshape(-1, 1, 1, 1)


def _load(path):
    import numpy as np
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path)).copy()).permute(2, 0, 1).float() / 255


def test_cli_lpips_and_fid_wiring(tmp_path, monkeypatch):
    a, b = _two_folders(tmp_path)
    feats = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    seen = {}
    monkeypatch.setattr(metrics, "load_lpips", lambda path, net: seen.setdefault("lpips", (path, net)) and _FakeLpips())
    monkeypatch.setattr(metrics, "InceptionFeatures", lambda path: seen.setdefault("fid", path) and feats)
    result = metrics.main([str(a), str(b), "--lpips", "w.pth", "--lpips-net", "vgg", "--fid-inception", "i.pth"])
    assert seen == {"lpips": ("w.pth", "vgg"), "fid": "i.pth"}
    names = ["0.png", "1.png", "2.png"]
    xa, xb = (torch.stack([_load(folder / n) for n in names]) for folder in (a, b))
    assert result.learned["lpips"] == pytest.approx(float((xa - xb).abs().flatten(1).mean(1).mean()), rel=1e-6)
    assert result.learned["fid"] == pytest.approx(metrics.fid(xa, xb, feats), rel=1e-6)
    assert result.learned["fid"] > 0 and result.learned["lpips"] > 0


def test_grey_image_files_and_the_inception_value_range(tmp_path, monkeypatch):
    from PIL import Image

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    rng = torch.Generator().manual_seed(3)
    for i in range(2):  # mode "L" files load as [H, W]: the demo's Fashion-MNIST grids are grey
        Image.fromarray((torch.rand(28, 28, generator=rng) * 255).to(torch.uint8).numpy()).save(a / f"{i}.png")
        Image.fromarray((torch.rand(28, 28, generator=rng) * 255).to(torch.uint8).numpy()).save(b / f"{i}.png")
    monkeypatch.setattr(metrics, "load_lpips", lambda path, net: _FakeLpips())
    result = metrics.main([str(a), str(b), "--lpips", "w.pth"])
    assert result.learned["lpips"] > 0
    feats = torch.nn.Module.__new__(metrics.InceptionFeatures)  # the range check without torch-fidelity
    torch.nn.Module.__init__(feats)
    feats.net = lambda x: (x.float().flatten(1),)
    assert feats(torch.rand(2, 1, 4, 4)).shape == (2, 48)  # grey repeated to RGB
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        feats(torch.rand(2, 3, 4, 4) * 255)  # uint8-range floats would otherwise clamp to white
