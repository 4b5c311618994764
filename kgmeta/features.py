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
    "svd_projection",
    "text_encoder_from_state",
    "text_encoder_state",
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


def _byte_ngram_codes(texts: Sequence[str], n: int, max_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """Character (UTF-8 byte) n-grams of the first ``max_chars`` characters of each text.

    Vectorised with numpy over all texts at once: lower-case, non-alphanumerics -> one space,
    pad with a space on both sides, then every window of ``n`` bytes is one feature (windows that
    are all spaces are dropped), coded as one integer. Orders of magnitude faster than sklearn's
    per-token Python loop. Returns ``(doc [W], code [W])``: the text and the code of each window.
    """
    cleaned = [" " + _NON_WORD.sub(" ", t[:max_chars].lower()).strip() + " " for t in texts]
    encoded = [c.encode("utf-8") for c in cleaned]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
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
    return doc[keep], code[keep]


def _ngram_counts(doc: np.ndarray, code: np.ndarray, vocab: np.ndarray, n_docs: int) -> sp.csr_matrix:
    """Counts ``[n_docs, len(vocab)]`` of the n-gram codes found in the sorted ``vocab``; codes
    outside it (n-grams a fitted encoder never saw) are dropped."""
    col = np.searchsorted(vocab, code)
    known = col < vocab.shape[0]
    known[known] = vocab[col[known]] == code[known]
    doc, col = doc[known], col[known]
    counts = sp.coo_matrix((np.ones(doc.shape[0], dtype=np.float32), (doc, col)),
                           shape=(n_docs, vocab.shape[0])).tocsr()
    counts.sum_duplicates()
    return counts


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _idf(counts: sp.csr_matrix) -> np.ndarray:
    """Smooth IDF ``log((1 + n) / (1 + df)) + 1`` per column ``[n_terms]`` (sklearn's)."""
    df = np.bincount(counts.tocsr().indices, minlength=counts.shape[1])
    return (np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)


def _tfidf_weight(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear TF (1 + log tf) times ``idf`` [n_terms], rows L2-normalised (sklearn's
    TfidfTransformer)."""
    x = counts.tocsr().astype(np.float32, copy=True)
    if x.shape[1] == 0:
        return x
    x.data = 1.0 + np.log(x.data)
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
    """Rank-``k`` truncated SVD features ``x V_k`` [n, k] of sparse ``x`` (Halko et al., 2011).

    ``x @ svd_projection(x, k)``; see :func:`svd_projection`.
    """
    p = svd_projection(x, k, n_iter=n_iter, oversample=oversample, seed=seed)
    return np.asarray(x @ p, dtype=np.float32)


def svd_projection(x: sp.csr_matrix, k: int, *, n_iter: int = 1, oversample: int = 10,
                   seed: int = 0) -> np.ndarray:
    """The top-``k`` right singular vectors ``V_k`` [m, k] of sparse ``x`` [n, m], as a projection.

    The algorithm of sklearn's ``TruncatedSVD(algorithm="randomized")``, written with torch
    kernels and CholeskyQR because numpy's tall QR was the bottleneck here (~8 s per QR at 100k
    rows on 2 shared cores). ``x @ V_k`` are the features (sklearn's ``transform``), so rows added
    later (a new ontology class) are projected exactly as the fitted ones. Seeded; signs fixed
    so that the largest-magnitude entry of every column of ``x @ V_k`` is positive, so equal
    input gives equal output.
    """
    n, m = x.shape
    width = min(k + oversample, n, m)
    threads = torch.get_num_threads()
    # Up to ~300k rows: one thread. OpenMP hand-offs on a busy machine cost seconds per call
    # (measured on 2 shared cores: 376 classes 5.5 s -> 0.2 s; 100k classes 25 s -> 20 s).
    if n * width < 50_000_000:
        torch.set_num_threads(1)
    try:
        return _svd_projection(x, k, width, n_iter, seed)
    finally:
        torch.set_num_threads(threads)


def _svd_projection(x: sp.csr_matrix, k: int, width: int, n_iter: int, seed: int) -> np.ndarray:
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
    # SVD of the wide B = U_b S V^T [width, m] through its small Gram matrix (gesdd on B took
    # 1.5 s at 10k): V_k = B^T U_b[:, :k] / S_k.
    bd = b.double()
    evals, evecs = torch.linalg.eigh(bd @ bd.T)  # ascending, [width], [width, width]
    s = evals.flip(0).clamp(min=0).sqrt()[:k]  # [k]
    u_b = evecs.flip(1)[:, :k]  # [width, k]
    v = (bd.T @ u_b) / torch.where(s > 1e-12 * s.max().clamp(min=1e-30), s, torch.inf)  # [m, k]
    z = torch.from_numpy(np.asarray(x @ v.numpy()))  # [n, k]
    idx = z.abs().argmax(dim=0)
    signs = torch.sign(z[idx, torch.arange(z.shape[1])])
    signs[signs == 0] = 1.0
    return (v * signs).float().numpy()


class TfidfSvdEncoder:
    """TF-IDF (word unigrams + character n-grams of the names) -> truncated SVD -> L2 norm.

    Word unigrams are read from the whole text (names and definition); character ``char_n``-grams
    from its first ``char_max_chars`` characters, which are the label and synonyms (see
    :func:`node_text`), so spelling variants ("carcinoma", "adenocarcinoma") share features.
    Each view is TF-IDF weighted (sublinear tf, smooth idf) and L2-normalised, the two are
    concatenated, and a seeded randomized truncated SVD reduces them to ``dim``.

    :meth:`fit` learns the vocabularies, the IDF weights and the SVD projection from the texts;
    :meth:`transform` maps any texts with them, each text on its own (words and n-grams the fit
    never saw are ignored), so a class added to the ontology later gets its features exactly as
    the fitted classes did, and theirs do not change. :meth:`state_dict` / :meth:`from_state`
    save and restore the fitted encoder as tensors and strings (``torch.load(...,
    weights_only=True)``-safe, no pickle).

    ``dim`` is clipped to what the data allows (``min(dim, n_texts - 1, n_terms - 1)``); below 2
    the L2-normalised TF-IDF columns themselves (at most ``dim``) are returned. Output is float32
    ``[n, d]``, ``d <= dim``; identical input gives identical output.

    Speed (100k ontology-like texts, 2 shared CPU cores): a few seconds, because character
    n-grams are counted with vectorised numpy and the SVD uses torch kernels.
    """

    STATE_FORMAT = "kgmeta-tfidf-svd-v1"

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
        self.words: list[str] | None = None      # word vocabulary, column order
        self.word_idf: np.ndarray | None = None  # [n_words]
        self.char_codes: np.ndarray | None = None  # sorted n-gram codes [n_chars]
        self.char_idf: np.ndarray | None = None  # [n_chars]
        self.projection: np.ndarray | None = None  # [n_words + n_chars, d]

    @property
    def fitted(self) -> bool:
        return self.projection is not None

    # ---- TF-IDF
    def _word_counts(self, texts: Sequence[str], fit: bool) -> sp.csr_matrix | None:
        if fit:
            vec = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b",
                                  max_features=self.max_word_features, dtype=np.float32)
            try:
                counts = vec.fit_transform(texts)
            except ValueError:  # empty vocabulary
                self.words, self.word_idf = [], np.zeros(0, dtype=np.float32)
                return None
            vocab = vec.vocabulary_
            self.words = sorted(vocab, key=vocab.__getitem__)
            self.word_idf = _idf(counts)
            return counts
        if not self.words:
            return None
        vec = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b",
                              vocabulary={w: i for i, w in enumerate(self.words)}, dtype=np.float32)
        return vec.transform(texts)

    def _tfidf(self, texts: Sequence[str], fit: bool) -> sp.csr_matrix:
        texts = [t if isinstance(t, str) else "" for t in texts]
        blocks = []
        words = self._word_counts(texts, fit)
        if words is not None:
            blocks.append(_tfidf_weight(words, self.word_idf))
        doc, code = _byte_ngram_codes(texts, self.char_n, self.char_max_chars)
        if fit:
            self.char_codes = np.unique(code)
        if self.char_codes is not None and self.char_codes.size:
            counts = _ngram_counts(doc, code, self.char_codes, len(texts))
            if fit:
                self.char_idf = _idf(counts)
            blocks.append(_tfidf_weight(counts, self.char_idf))
        if not blocks:
            return sp.csr_matrix((len(texts), 1), dtype=np.float32)
        # Each view has unit rows; scale so the concatenation has unit rows too.
        return (sp.hstack(blocks, format="csr") * np.float32(1 / np.sqrt(len(blocks)))).tocsr()

    def tfidf(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The sparse TF-IDF matrix ``[n, n_terms]`` (both views concatenated, rows unit norm),
        with the fitted vocabulary and IDF when fitted, else fitted on ``texts`` (not kept)."""
        if self.fitted:
            return self._tfidf(texts, fit=False)
        return TfidfSvdEncoder(self.dim, char_n=self.char_n, char_max_chars=self.char_max_chars,
                               max_word_features=self.max_word_features)._tfidf(texts, fit=True)

    # ---- fit / transform
    def fit(self, texts: Sequence[str]) -> "TfidfSvdEncoder":
        """Learn vocabularies, IDF weights and the SVD projection from ``texts``; returns self."""
        x = self._tfidf(texts, fit=True)  # [n, n_terms]
        n = len(texts)
        k = min(self.dim, n - 1, x.shape[1] - 1)
        if k < 2:  # too little data for an SVD: the first TF-IDF columns themselves
            d = max(1, min(self.dim, x.shape[1]))
            self.projection = np.eye(x.shape[1], d, dtype=np.float32)
        else:
            self.projection = svd_projection(x, k, n_iter=self.svd_iter, seed=self.random_state)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Features ``[len(texts), d]`` float32, L2-normalised, of any texts (needs :meth:`fit`)."""
        if not self.fitted:
            raise ConfigError("the text encoder is not fitted; call fit(texts) before transform")
        if len(texts) == 0:
            return np.zeros((0, self.projection.shape[1]), dtype=np.float32)
        x = self._tfidf(texts, fit=False)  # [n, n_terms]
        return l2_normalize(np.asarray(x @ self.projection, dtype=np.float32)).astype(np.float32)

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`fit` on ``texts``, then their :meth:`transform` ``[n, d]``."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.fit(texts).transform(texts)

    # ---- saving
    def state_dict(self) -> dict:
        """The fitted encoder as tensors, strings and numbers (``weights_only``-loadable)."""
        if not self.fitted:
            raise ConfigError("the text encoder is not fitted; nothing to save")
        return {"format": self.STATE_FORMAT, "dim": self.dim, "char_n": self.char_n,
                "char_max_chars": self.char_max_chars, "words": _SEP.join(self.words or []),
                "n_words": len(self.words or []),
                "word_idf": torch.from_numpy(np.ascontiguousarray(self.word_idf)),
                "char_codes": torch.from_numpy(np.ascontiguousarray(self.char_codes)),
                "char_idf": torch.from_numpy(np.ascontiguousarray(
                    self.char_idf if self.char_idf is not None else np.zeros(0, np.float32))),
                "projection": torch.from_numpy(np.ascontiguousarray(self.projection))}

    @classmethod
    def from_state(cls, state: dict) -> "TfidfSvdEncoder":
        """The encoder saved by :meth:`state_dict`; an inconsistent state raises ValueError."""
        if not isinstance(state, dict) or state.get("format") != cls.STATE_FORMAT:
            raise ValueError(f"not a {cls.STATE_FORMAT} text encoder state")
        enc = cls(int(state["dim"]), char_n=int(state["char_n"]), char_max_chars=int(state["char_max_chars"]))
        words = state["words"].split(_SEP) if state["words"] else []
        if len(words) != int(state["n_words"]):
            raise ValueError("word vocabulary size mismatch")
        enc.words = words
        enc.word_idf = state["word_idf"].numpy().astype(np.float32)
        enc.char_codes = state["char_codes"].numpy().astype(np.int64)
        enc.char_idf = state["char_idf"].numpy().astype(np.float32)
        enc.projection = state["projection"].numpy().astype(np.float32)
        n_terms = len(words) + int(enc.char_codes.size) if (words or enc.char_codes.size) else 1
        if (enc.word_idf.shape != (len(words),) or enc.char_idf.shape != enc.char_codes.shape
                or enc.projection.ndim != 2 or enc.projection.shape[0] != n_terms):
            raise ValueError("inconsistent text encoder state shapes")
        return enc


_SEP = "\x00"  # never part of a token


TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "tfidf": TfidfSvdEncoder,
}


def text_encoder_state(encoder: TextEncoder) -> dict | None:
    """A fitted encoder's saved form (:meth:`TfidfSvdEncoder.state_dict`), or None for an encoder
    that cannot be saved (a plug-in without ``state_dict``/``transform``)."""
    if hasattr(encoder, "state_dict") and hasattr(encoder, "transform") and getattr(encoder, "fitted", True):
        return encoder.state_dict()
    return None


def text_encoder_from_state(state: dict) -> TextEncoder:
    """The fitted encoder saved by :func:`text_encoder_state` (chosen by its ``format``).

    Raises:
        ValueError: the state is not one a registered encoder wrote, or is inconsistent.
    """
    fmt = state.get("format") if isinstance(state, dict) else None
    for factory in TEXT_ENCODERS.values():
        if getattr(factory, "STATE_FORMAT", None) == fmt and hasattr(factory, "from_state"):
            return factory.from_state(state)
    raise ValueError(f"no registered text encoder reads the saved format {fmt!r}")


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
