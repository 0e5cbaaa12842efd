"""Spectral gap of a mixing matrix, computed from ``W`` (never hand-coded per graph)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph
from scipy.sparse.linalg import (
    ArpackNoConvergence,
    LinearOperator,
    eigsh,
    splu,
    svds,
)

from decent.topology._matrix import MixingMatrix, TopologyError, is_symmetric

DENSE_LIMIT = 2048
"""Matrices with at most this many nodes use dense LAPACK; larger ones use ARPACK."""

_SYM_TOL = 1e-10


def _as_csr(w: Any) -> sp.csr_array:
    """Convert a MixingMatrix, numpy array, scipy sparse matrix or torch tensor to CSR."""
    if isinstance(w, MixingMatrix):
        return w.csr
    if type(w).__module__.split(".")[0] == "torch":
        w = _torch_to_scipy(w)
    csr = sp.csr_array(w, dtype=np.float64)
    if csr.ndim != 2 or csr.shape[0] != csr.shape[1]:
        raise TopologyError(f"spectral_gap needs a square (n, n) matrix, got shape {csr.shape}")
    return csr


def _torch_to_scipy(w: Any) -> sp.coo_array | np.ndarray:
    """Convert a dense or sparse torch tensor to numpy/scipy without densifying sparse input."""
    import torch

    w = w.detach().cpu()
    if w.layout != torch.strided:
        coo = w.to_sparse_coo().coalesce()
        idx = coo.indices().numpy()
        vals = coo.values().to(dtype=torch.float64).numpy()
        return sp.coo_array((vals, (idx[0], idx[1])), shape=tuple(coo.shape))
    return np.asarray(w.to(dtype=torch.float64).numpy())


def spectral_gap(w: MixingMatrix | np.ndarray | sp.spmatrix | sp.sparray | Any) -> float:
    """Return the spectral gap ``1 - |lambda_2|`` of a mixing matrix.

    For a symmetric ``W`` the gap is one minus the *second largest eigenvalue modulus*:

    .. math::
        \\gamma = 1 - \\max(|\\lambda_2|, |\\lambda_n|),
        \\qquad 1 = \\lambda_1 \\ge \\lambda_2 \\ge \\dots \\ge \\lambda_n,

    so one gossip step contracts the disagreement ``x - \\bar x 1`` by at least
    ``1 - gamma``. Dense ``eigvalsh`` is used for ``n <= 2048``. Beyond, a circulant ``W``
    (a ring) or a block-circulant one with circulant blocks (a torus, row-major) has the
    closed-form spectrum ``fft(first row)`` (``fft2`` for a torus), exact in
    ``O(n log n)``; any other ``W`` goes to ARPACK (``eigsh``).

    For a non-symmetric ``W`` the eigenvalues do not bound the contraction, so the gap is
    defined through the 2-norm consensus contraction instead:

    .. math::
        \\gamma = 1 - \\| W - J \\|_2, \\qquad J = \\tfrac{1}{n} 1 1^\\top,

    which satisfies ``||W x - J x|| <= (1 - gamma) ||x - J x||`` whenever ``W`` is doubly
    stochastic. It can be ``<= 0`` for a graph that needs several rounds to contract (for
    example a directed ring), and for a matrix that is only row-stochastic.

    Args:
        w: an ``(n, n)`` mixing matrix: :class:`MixingMatrix`, numpy array, scipy sparse
            matrix or torch tensor (dense or sparse).

    Returns:
        The gap as a Python float; ``1.0`` for a single node, ``0.0`` for a disconnected
        symmetric stochastic matrix.

    Raises:
        TopologyError: ``w`` is not square.

    Example:
        >>> import numpy as np
        >>> round(spectral_gap(np.full((4, 4), 0.25)), 12)
        1.0
    """
    csr = _as_csr(w)
    n = int(csr.shape[0])
    if n <= 1:
        return 1.0
    if is_symmetric(csr):
        slem = _slem_dense(csr) if n <= DENSE_LIMIT else _circulant_slem(csr)
        if slem is None:
            slem = _slem_sparse(csr)
        return float(1.0 - slem)
    return float(1.0 - _consensus_norm(csr))


def _circulant_slem(csr: sp.csr_array) -> float | None:
    """The SLEM of a ring-like (circulant) or torus-like (2-D circulant) ``W`` in closed form.

    ``W`` is 2-D circulant on an ``r x c`` grid (row-major ids, ``r = 1`` for a ring) when
    ``W[i, j]`` depends only on ``((j // c - i // c) mod r, (j % c - i % c) mod c)``; its
    eigenvalues are then the 2-D DFT of its first row laid out as ``r x c``. Returns
    ``None`` when ``W`` has no such structure for any ``c`` among row 0's neighbours.
    """
    n = int(csr.shape[0])
    coo = sp.coo_array(csr)
    rows, cols, vals = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    first = csr[[0], :].toarray().ravel()
    candidates = sorted({n, *(int(j) for j in np.flatnonzero(first) if 0 < j < n and n % j == 0)})
    for c in candidates:
        r = n // c
        di = (cols // c - rows // c) % r
        dj = (cols % c - rows % c) % c
        if np.count_nonzero(first) * n != vals.size:
            return None
        if not np.allclose(vals, first[di * c + dj], rtol=0.0, atol=_SYM_TOL):
            continue
        eig = np.fft.fft2(first.reshape(r, c)).real.ravel()
        return float(np.sort(np.abs(eig))[-2])
    return None


def _slem_dense(csr: sp.csr_array) -> float:
    w = csr.toarray()
    w = 0.5 * (w + w.T)
    mods = np.sort(np.abs(np.linalg.eigvalsh(w)))
    return float(mods[-2])


def _start_vector(n: int) -> np.ndarray:
    v0 = np.random.default_rng(0).standard_normal(n)
    return v0 - v0.mean()


def _slem_sparse(csr: sp.csr_array) -> float:
    """Second largest eigenvalue modulus of a large sparse symmetric matrix."""
    n = int(csr.shape[0])
    csr = sp.csr_array(0.5 * (csr + csr.T))
    row_sums = np.asarray(csr.sum(axis=1)).ravel()
    if not np.allclose(row_sums, 1.0, atol=1e-8):
        # Not stochastic: no known top eigenvector to deflate; take the two largest moduli.
        vals = eigsh(csr, k=2, which="LM", return_eigenvectors=False, v0=_start_vector(n))
        return float(np.sort(np.abs(vals))[0])
    count, _ = csgraph.connected_components(csr, directed=False)
    if count > 1:
        return 1.0  # eigenvalue 1 has multiplicity >= 2

    # W is symmetric stochastic with top eigenvector 1: the SLEM is ||W - J||_2, the largest
    # modulus of the deflated operator x -> W x - mean(x) 1.
    def deflated(x: np.ndarray) -> np.ndarray:
        return np.asarray(csr @ x - x.mean(axis=0))

    op = LinearOperator((n, n), matvec=deflated, matmat=deflated, dtype=np.float64)
    try:
        vals = eigsh(
            op,
            k=1,
            which="LM",
            return_eigenvectors=False,
            v0=_start_vector(n),
            ncv=32,
            maxiter=40,
            tol=1e-12,
        )
        return float(np.abs(vals).max())
    except ArpackNoConvergence:
        pass
    # Clustered spectrum (a large ring, grid or torus): shift-invert at both ends.
    top = _top_by_grounded_inverse(csr)
    # Gershgorin: lambda_n >= min_i (2 w_ii - 1), so the bottom end only matters when that
    # bound can beat lambda_2 (small self weights, near-bipartite graphs).
    bottom_bound = max(0.0, 1.0 - 2.0 * float(csr.diagonal().min()))
    if bottom_bound <= top:
        return top
    return max(top, _bottom_by_shift_invert(csr))


def _top_by_grounded_inverse(csr: sp.csr_array) -> float:
    """``lambda_2`` of a connected symmetric stochastic ``W`` via the Laplacian pseudo-inverse.

    ``L = I - W`` is singular only along ``1``; grounding node 0 gives an SPD system whose
    solution, projected onto ``1^perp``, applies ``L^+``. The largest eigenvalue of ``L^+`` is
    ``1 / (1 - lambda_2)`` and is well separated even when ``lambda_2`` is within ``1e-7``
    of 1.
    """
    n = int(csr.shape[0])
    lap = sp.csc_array(sp.eye_array(n) - csr)
    lu = splu(sp.csc_array(lap[1:, 1:]))

    def apply(b: np.ndarray) -> np.ndarray:
        b = np.asarray(b).reshape(n)
        b = b - b.mean()
        x = np.zeros(n)
        x[1:] = lu.solve(b[1:])
        return x - x.mean()

    op = LinearOperator((n, n), matvec=apply, dtype=np.float64)
    mu = eigsh(op, k=1, which="LA", return_eigenvectors=False, v0=_start_vector(n), tol=1e-11)
    return float(1.0 - 1.0 / float(mu.max()))


def _bottom_by_shift_invert(csr: sp.csr_array) -> float:
    """``|lambda_n|`` of a symmetric stochastic ``W``: smallest eigenvalue via ``(W + I)^{-1}``."""
    n = int(csr.shape[0])
    shifted = sp.csc_array(csr + sp.eye_array(n))
    try:
        lu = splu(shifted)
    except RuntimeError:  # exactly singular: lambda_n = -1
        return 1.0
    op = LinearOperator((n, n), matvec=lambda b: lu.solve(np.asarray(b).reshape(n)))
    mu = eigsh(op, k=1, which="LA", return_eigenvectors=False, v0=_start_vector(n), tol=1e-11)
    lam_min = 1.0 / float(mu.max()) - 1.0
    return abs(lam_min)


def _consensus_norm(csr: sp.csr_array) -> float:
    """``||W - J||_2`` for any square ``W``."""
    n = int(csr.shape[0])
    if n <= DENSE_LIMIT:
        w = csr.toarray() - 1.0 / n
        return float(np.linalg.norm(w, 2))
    wt = sp.csr_array(csr.T)

    def matvec(x: np.ndarray) -> np.ndarray:
        return np.asarray(csr @ x - x.mean(axis=0))

    def rmatvec(x: np.ndarray) -> np.ndarray:
        return np.asarray(wt @ x - x.mean(axis=0))

    op = LinearOperator(
        (n, n),
        matvec=matvec,
        rmatvec=rmatvec,
        matmat=matvec,
        rmatmat=rmatvec,
        dtype=np.float64,
    )
    s = svds(op, k=1, return_singular_vectors=False, v0=_start_vector(n))
    return float(np.max(s))
