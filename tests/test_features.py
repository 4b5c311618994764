"""Node text features: shape, determinism, normalisation, registry errors."""

import numpy as np
import pytest

from kgmeta.errors import ConfigError
from kgmeta.features import TEXT_ENCODERS, TextEncoder, build_text_encoder, node_text

TEXTS = [
    node_text("lung carcinoma", ["lung cancer"], "A carcinoma of the lung."),
    node_text("lung adenocarcinoma", [], "An adenocarcinoma that arises in the lung."),
    node_text("skin melanoma", ["cutaneous melanoma"], "A melanoma of the skin."),
    node_text("pneumonia", ["lung inflammation"], "Inflammation of the lung."),
    node_text("fracture", [], None),
    node_text("x", [], None),
]


def test_tfidf_shape_norm_and_determinism():
    enc = build_text_encoder("tfidf", dim=4)
    assert isinstance(enc, TextEncoder)
    a = enc.fit_transform(TEXTS)
    b = build_text_encoder("tfidf", dim=4).fit_transform(TEXTS)
    assert a.shape == (len(TEXTS), 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_dim_is_clipped_to_data_and_similar_texts_are_close():
    z = build_text_encoder("tfidf", dim=128).fit_transform(TEXTS)
    assert z.shape[0] == len(TEXTS) and 2 <= z.shape[1] <= len(TEXTS) - 1
    sim = z @ z.T
    assert sim[0, 1] > sim[0, 4]  # two lung carcinomas closer than lung vs fracture


def test_tiny_inputs():
    assert build_text_encoder("tfidf").fit_transform([]).shape == (0, 128)
    one = build_text_encoder("tfidf", dim=8).fit_transform(["heart"])
    assert one.shape[0] == 1 and one.shape[1] <= 8
    assert np.isfinite(one).all()


def test_unknown_encoder_lists_choices():
    with pytest.raises(ConfigError, match="tfidf"):
        build_text_encoder("bert-nope")
    assert "tfidf" in TEXT_ENCODERS


def test_node_text_puts_names_first():
    assert node_text("a", ["b", "a"], "def") == "a ; b . def"
