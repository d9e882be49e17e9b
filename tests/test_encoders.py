"""Frozen image encoders: shapes, losslessness, freezing, caching, DINOv2 loading and errors."""
import numpy as np
import pytest
import torch

from relam.perception.encoders import (
    ConvAEEncoder,
    Dinov2Encoder,
    MissingWeightsError,
    PixelPatchEncoder,
    encode_cached,
    encoder_from_state,
    make_encoder,
)

torch.set_num_threads(1)


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_pixel_patches_are_the_image_in_patch_order():
    enc = PixelPatchEncoder(image_size=32, patch=8)
    imgs = _images()
    tok = enc.encode(imgs)
    assert tok.shape == (3, 16, 3 * 64) and enc.num_patches == 16 and enc.dim == 192
    # patch (row 1, col 2) -> token 1*4+2; channel-major unfold layout (3, 8, 8)
    expected = imgs[0, 8:16, 16:24].transpose(2, 0, 1).reshape(-1) / 127.5 - 1
    np.testing.assert_allclose(tok[0, 6].numpy(), expected, atol=1e-6)


def test_conv_ae_shapes_frozen_and_fit_lowers_reconstruction_error():
    enc = ConvAEEncoder(image_size=32, stride=8, dim=16, width=8, seed=0)
    imgs = _images(8)
    assert enc.encode(imgs).shape == (8, 16, 16)
    assert enc.grid == 4 and enc.num_patches == 16 and enc.dim == 16
    before = np.abs(enc.reconstruct(imgs).astype(float) - imgs).mean()
    losses = enc.fit(imgs, steps=40, batch_size=8, lr=3e-3, progress=False)
    after = np.abs(enc.reconstruct(imgs).astype(float) - imgs).mean()
    assert losses[-1] < losses[0] and after < before
    assert all(not p.requires_grad for p in enc.net.parameters())


def test_encoder_state_round_trip_gives_identical_tokens():
    enc = ConvAEEncoder(image_size=32, stride=8, dim=16, width=8, seed=3)
    enc.fit(_images(4), steps=3, batch_size=4, progress=False)
    again = encoder_from_state(enc.state())
    imgs = _images(2, seed=5)
    assert torch.equal(enc.encode(imgs), again.encode(imgs))


def test_encode_cached_computes_each_image_once():
    enc = PixelPatchEncoder(image_size=32, patch=16)
    calls = []
    orig = enc.encode
    enc.encode = lambda x: (calls.append(len(x)), orig(x))[1]
    cache = {}
    imgs = _images(3)
    a = encode_cached(enc, np.concatenate([imgs, imgs[:1]]), cache)
    b = encode_cached(enc, imgs[::-1], cache)
    assert calls == [3]  # duplicates and repeats were never recomputed
    assert torch.equal(a[0], a[3]) and torch.equal(a[2], b[0])


def test_bad_images_name_the_problem():
    enc = PixelPatchEncoder(image_size=32, patch=8)
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="32x32"):
        enc.encode(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("resnet")


def test_dinov2_missing_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("RELAM_DINOV2_PATH", raising=False)
    missing = tmp_path / "no-dinov2-here"
    with pytest.raises(MissingWeightsError) as e:
        make_encoder("dinov2", path=missing)
    assert str(missing) in str(e.value) and "huggingface-cli download" in str(e.value)
    with pytest.raises(MissingWeightsError, match="local weights path"):
        Dinov2Encoder(path=None)


def test_dinov2_loads_a_local_folder_and_returns_patch_tokens(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the 'pretrained' extra is not installed")
    Dinov2Config, Dinov2Model = transformers.Dinov2Config, transformers.Dinov2Model

    torch.manual_seed(0)
    tiny = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, patch_size=14, image_size=56))
    tiny.save_pretrained(tmp_path / "dinov2-tiny")
    enc = make_encoder("dinov2", path=tmp_path / "dinov2-tiny", input_size=56)
    tok = enc.encode(_images(2, size=40))
    assert tok.shape == (2, 16, 32) and enc.num_patches == 16 and enc.dim == 32
    assert all(not p.requires_grad for p in enc.model.parameters())
    assert encoder_from_state(enc.state()).path == str(tmp_path / "dinov2-tiny")
