"""Node text features: one vector per ontology class from its label, synonyms and definition.

The default encoder is TF-IDF over word unigrams (whole text) and character 3-grams (the first
``char_max_chars`` characters, i.e. the label and synonyms, which come first in the node text),
reduced by a seeded randomized truncated SVD and L2-normalised. It needs no download, is deterministic, and a
class added to the ontology tomorrow gets features from its text alone.

Other encoders (a sentence transformer, a biomedical BERT) plug in through the small
:class:`TextEncoder` protocol and the :data:`TEXT_ENCODERS` registry.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer

from kgmeta.errors import ConfigError

__all__ = [
    "TEXT_ENCODERS",
    "TextEncoder",
    "TfidfSvdEncoder",
    "build_text_encoder",
    "l2_normalize",
    "node_text",
    "randomized_svd",
]


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps n texts to a float array ``[n, d]`` (d may depend on the data)."""

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray: ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def node_text(label: str, synonyms: Sequence[str] = (), definition: str | None = None) -> str:
    """The text of one node: names first (label; synonyms), then the definition.

    Names come first so that the character n-grams, which only read the first characters of a
    text, cover the names rather than the definition.
    """
    names = [label, *[s for s in synonyms if s and s != label]]
    text = " ; ".join(n for n in names if n)
    if definition:
        text = f"{text} . {definition}" if text else definition
    return text


def _byte_ngram_counts(texts: Sequence[str], n: int, max_chars: int) -> sp.csr_matrix:
    """Character (UTF-8 byte) n-gram counts of the first ``max_chars`` characters of each text.

    Vectorised with numpy over all texts at once: lower-case, non-alphanumerics -> one space,
    pad with a space on both sides, then every window of ``n`` bytes is one feature (windows that
    are all spaces are dropped). Orders of magnitude faster than sklearn's per-token Python loop.
    Returns counts ``[len(texts), n_features]``.
    """
    cleaned = [" " + _NON_WORD.sub(" ", t[:max_chars].lower()).strip() + " " for t in texts]
    encoded = [c.encode("utf-8") for c in cleaned]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_win = np.maximum(lengths - n + 1, 0)  # windows per text
    doc = np.repeat(np.arange(len(texts)), n_win)
    pos = np.arange(int(n_win.sum())) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    pos = pos + np.repeat(starts, n_win)  # window start in buf
    code = np.zeros(pos.shape[0], dtype=np.int64)
    spaces = np.zeros(pos.shape[0], dtype=np.int64)
    for i in range(n):
        b = buf[pos + i]
        code = code * 256 + b
        spaces += b == 32
    keep = spaces < n
    doc, code = doc[keep], code[keep]
    if code.size == 0:
        return sp.csr_matrix((len(texts), 0), dtype=np.float32)
    vocab, col = np.unique(code, return_inverse=True)
    counts = sp.coo_matrix(
        (np.ones(code.shape[0], dtype=np.float32), (doc, col.ravel())),
        shape=(len(texts), vocab.shape[0]),
    ).tocsr()
    counts.sum_duplicates()
    return counts


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _tfidf_weight(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Sublinear TF (1 + log tf) times smooth IDF, rows L2-normalised (sklearn's TfidfTransformer)."""
    x = counts.tocsr().astype(np.float32, copy=True)
    if x.shape[1] == 0:
        return x
    x.data = 1.0 + np.log(x.data)
    df = np.bincount(x.indices, minlength=x.shape[1])
    idf = (np.log((1.0 + x.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ x
    return x.tocsr()


def _orthonormalize(y: torch.Tensor, passes: int = 2) -> torch.Tensor:
    """Orthonormal basis of the columns of ``y`` [n, k] (CholeskyQR, ``passes`` times; QR fallback).

    A Cholesky of the small Gram matrix [k, k] is several times faster than a Householder QR of a
    tall matrix on CPU; two passes (CholeskyQR2) make it as accurate, one pass is enough between
    power iterations (it only has to keep the columns well conditioned).
    """
    q = y.double()
    try:
        for _ in range(passes):
            g = q.T @ q  # [k, k]
            g = g + 1e-10 * torch.trace(g) / g.shape[0] * torch.eye(g.shape[0], dtype=g.dtype)
            chol = torch.linalg.cholesky(g)
            q = torch.linalg.solve_triangular(chol, q.T, upper=False).T
    except RuntimeError:  # numerically rank deficient: slower but safe
        q, _ = torch.linalg.qr(y.double())
    return q.float()


def _torch_csr(x: sp.csr_matrix) -> torch.Tensor:
    x = x.tocsr()
    return torch.sparse_csr_tensor(
        torch.from_numpy(x.indptr.astype(np.int64)), torch.from_numpy(x.indices.astype(np.int64)),
        torch.from_numpy(x.data.astype(np.float32)), size=x.shape,
    )


def randomized_svd(x: sp.csr_matrix, k: int, *, n_iter: int = 1, oversample: int = 10,
                   seed: int = 0) -> np.ndarray:
    """Rank-``k`` truncated SVD projection ``U_k S_k`` [n, k] of sparse ``x`` (Halko et al., 2011).

    The algorithm of sklearn's ``TruncatedSVD(algorithm="randomized")``, written with torch
    kernels and CholeskyQR because numpy's tall QR was the bottleneck here (~8 s per QR at 100k
    rows on 2 shared cores). Seeded; signs fixed so that the largest-magnitude entry of every left
    singular vector is positive, so equal input gives equal output.
    """
    n, m = x.shape
    width = min(k + oversample, n, m)
    threads = torch.get_num_threads()
    # Up to ~300k rows: one thread. OpenMP hand-offs on a busy machine cost seconds per call
    # (measured on 2 shared cores: 376 classes 5.5 s -> 0.2 s; 100k classes 25 s -> 20 s).
    if n * width < 50_000_000:
        torch.set_num_threads(1)
    try:
        return _randomized_svd(x, k, width, n_iter, seed)
    finally:
        torch.set_num_threads(threads)


def _randomized_svd(x: sp.csr_matrix, k: int, width: int, n_iter: int, seed: int) -> np.ndarray:
    n, m = x.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR tensor support is in beta"
        xt = _torch_csr(x)  # [n, m]
        xtt = _torch_csr(x.T.tocsr())  # [m, n]
        gen = torch.Generator().manual_seed(seed)
        omega = torch.randn(m, width, generator=gen)
        q = _orthonormalize(xt @ omega, passes=1)  # [n, width]
        for _ in range(n_iter):
            q = _orthonormalize(xtt @ q, passes=1)  # [m, width]
            q = _orthonormalize(xt @ q, passes=1)  # [n, width]
        q = _orthonormalize(q, passes=2)
        b = (xtt @ q).T  # [width, m] = Q^T X
    # SVD of the wide B [width, m] through its small Gram matrix (gesdd on B took 1.5 s at 10k).
    bd = b.double()
    evals, evecs = torch.linalg.eigh(bd @ bd.T)  # ascending, [width], [width, width]
    s = evals.flip(0).clamp(min=0).sqrt()
    u_b = evecs.flip(1)
    u = q.double() @ u_b[:, :k]  # [n, k]
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u[idx, torch.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    return (u * signs * s[:k]).float().numpy()


class TfidfSvdEncoder:
    """TF-IDF (word unigrams + character n-grams of the names) -> truncated SVD -> L2 norm.

    Word unigrams are read from the whole text (names and definition); character ``char_n``-grams
    from its first ``char_max_chars`` characters, which are the label and synonyms (see
    :func:`node_text`), so spelling variants ("carcinoma", "adenocarcinoma") share features.
    Each view is TF-IDF weighted (sublinear tf, smooth idf) and L2-normalised, the two are
    concatenated, and a seeded randomized truncated SVD reduces them to ``dim``.

    ``dim`` is clipped to what the data allows (``min(dim, n_texts - 1, n_terms - 1)``); below 2
    the L2-normalised TF-IDF columns themselves (at most ``dim``) are returned. Output is float32
    ``[n, d]``, ``d <= dim``; identical input gives identical output.

    Speed (100k ontology-like texts, 2 shared CPU cores): a few seconds, because character
    n-grams are counted with vectorised numpy and the SVD uses torch kernels.
    """

    def __init__(
        self,
        dim: int = 128,
        *,
        char_n: int = 3,
        char_max_chars: int = 64,
        max_word_features: int | None = 100_000,
        svd_iter: int = 1,
        random_state: int = 0,
    ) -> None:
        if dim < 1:
            raise ConfigError(f"text feature dim must be >= 1, got {dim}; pass a positive dim")
        self.dim = int(dim)
        self.char_n = int(char_n)
        self.char_max_chars = int(char_max_chars)
        self.max_word_features = max_word_features
        self.svd_iter = int(svd_iter)
        self.random_state = int(random_state)

    def tfidf(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The sparse TF-IDF matrix ``[n, n_terms]`` (both views concatenated, rows unit norm)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        blocks = []
        words = CountVectorizer(
            lowercase=True, token_pattern=r"(?u)\b\w+\b", max_features=self.max_word_features,
            dtype=np.float32,
        )
        try:
            blocks.append(_tfidf_weight(words.fit_transform(texts)))
        except ValueError:  # empty vocabulary
            pass
        chars = _byte_ngram_counts(texts, self.char_n, self.char_max_chars)
        if chars.shape[1]:
            blocks.append(_tfidf_weight(chars))
        if not blocks:
            return sp.csr_matrix((len(texts), 1), dtype=np.float32)
        # Each view has unit rows; scale so the concatenation has unit rows too.
        return (sp.hstack(blocks, format="csr") * np.float32(1 / np.sqrt(len(blocks)))).tocsr()

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self.tfidf(texts)  # [n, n_terms]
        k = min(self.dim, n - 1, x.shape[1] - 1)
        if k < 2:
            dense = x[:, : self.dim].toarray()
            return l2_normalize(dense).astype(np.float32)
        z = randomized_svd(x, k, n_iter=self.svd_iter, seed=self.random_state)  # [n, k]
        return l2_normalize(z).astype(np.float32)


TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "tfidf": TfidfSvdEncoder,
}


def build_text_encoder(name: str, **kw) -> TextEncoder:
    """Instantiate the text encoder registered under ``name`` with keyword arguments ``kw``."""
    try:
        factory = TEXT_ENCODERS[name]
    except KeyError:
        choices = ", ".join(sorted(TEXT_ENCODERS))
        raise ConfigError(
            f"unknown text encoder {name!r}; valid choices: {choices}"
        ) from None
    return factory(**kw)
