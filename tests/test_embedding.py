"""Tests of baselines/embedding.py: helpers with known answers, backends, and the claim that the
default (temporal) embedding's similarity to the next true keyframe rises as a held-out expert
demo approaches it."""
import numpy as np
import pytest
import torch

from baselines.embedding import (
    PixelEmbedding,
    TemporalEmbedding,
    approach_score,
    cosine_similarity,
    embedding_from_state,
    make_embedding,
    resize_images,
)


def test_resize_images_area_average_known_answer():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[0, :2, :2] = 200  # top-left 2x2 block
    img[0, 2:, 2:] = 100
    out = resize_images(img, 2)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, :, 0], [[200, 0], [0, 100]])
    up = resize_images(out, 8)
    assert up.shape == (1, 8, 8, 3)
    assert resize_images(img[0], 4).shape == (1, 4, 4, 3)  # a single (H,W,3) image is a batch of 1
    with pytest.raises(ValueError, match="uint8"):
        resize_images(img.astype(np.float32), 2)


def test_cosine_similarity_known_answers():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([1.0, 0.0])
    np.testing.assert_allclose(cosine_similarity(a, b), [1.0, np.sqrt(0.5), 0.0])
    np.testing.assert_allclose(cosine_similarity([[0, 2]], [[0, -3]]), [-1.0])


def test_pixel_and_temporal_embeddings_are_unit_vectors_and_round_trip():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    for emb in (PixelEmbedding(), TemporalEmbedding(dim=8, width=8)):
        z = emb.embed(imgs)
        assert z.shape[0] == 3 and z.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
        again = embedding_from_state(emb.state()).embed(imgs)
        np.testing.assert_allclose(again, z, atol=1e-6)
    with pytest.raises(ValueError, match="unknown embedding"):
        make_embedding("clip")


def test_dinov2_missing_weights_names_the_path(tmp_path):
    from relam.perception.encoders import MissingWeightsError

    missing = tmp_path / "no-dinov2-here"
    with pytest.raises(MissingWeightsError, match="no-dinov2-here"):
        make_embedding("dinov2", path=str(missing))


def test_dinov2_backend_with_a_tiny_random_model():
    transformers = pytest.importorskip("transformers", reason="the 'pretrained' extra is not installed")
    Dinov2Config, Dinov2Model = transformers.Dinov2Config, transformers.Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, patch_size=14, image_size=28)
    emb = make_embedding("dinov2", model=Dinov2Model(cfg), input_size=28, pooling="mean")
    z = emb.embed(np.zeros((2, 32, 32, 3), np.uint8))
    assert z.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def drawer_demos():
    from relam.demos import load_demos

    return load_demos("drawer-open-v3", n=5)


def _even_keyframes(demo, n=3):
    """Keyframes at evenly spaced steps (the last = the final frame), as a stand-in for Eq. 2."""
    T = demo.length
    return np.linspace(0, T, n + 1).round().astype(int)[1:]


@pytest.mark.slow
def test_temporal_similarity_rises_towards_the_next_keyframe_on_held_out_demos(drawer_demos):
    torch.manual_seed(0)
    train, test = drawer_demos[:3], drawer_demos[3:]
    emb = TemporalEmbedding(dim=16, width=8)
    losses = emb.fit([d.frames for d in train], steps=120, batch_size=32, progress=False)
    assert np.mean(losses[-20:]) < np.mean(losses[:5])
    videos = [d.frames for d in test]
    steps = [_even_keyframes(d) for d in test]
    score = approach_score(emb, videos, steps)
    # similarity to the next true keyframe rises along the demo, on average over segments
    assert score["rho"] > 0.7, score
    assert score["rises"] >= 0.8, score
    # and it has a usable range: far from the keyframe the similarity is clearly lower than at it
    assert score["s_end"] - score["s_start"] > 0.3, score
    # an untrained encoder of the same shape does not have that range (the training matters)
    raw = approach_score(TemporalEmbedding(dim=16, width=8, seed=1), videos, steps)
    assert raw["s_end"] - raw["s_start"] < score["s_end"] - score["s_start"]
