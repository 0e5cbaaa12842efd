"""Mixing matrices and the topology protocol.

Convention, fixed once for the whole library: ``W[i, j]`` is the weight node ``i`` gives
to node ``j``'s value, so one gossip step on stacked node values is ``X <- W @ X`` and
node ``i`` *receives* from every ``j`` with ``W[i, j] > 0`` (``j != i``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

_TOL = 1e-10


class TopologyError(ValueError):
    """A graph or mixing matrix that breaks a rule; the message names the rule and the fix."""


def is_symmetric(csr: sp.csr_array) -> bool:
    """Whether ``W == W.T`` up to ``1e-10``."""
    diff = csr - csr.T
    return bool(diff.nnz == 0 or np.abs(diff.data).max() <= _TOL)


@dataclass(frozen=True, eq=False)
class MixingMatrix:
    """An ``(n, n)`` row-stochastic mixing matrix stored sparse (CSR, float64).

    Use :func:`MixingMatrix.from_array` to build and validate one. ``W[i, j]`` is the
    weight node ``i`` gives node ``j``.
    """

    csr: sp.csr_array
    name: str = "W"
    _cache: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def from_array(w: np.ndarray | sp.spmatrix | sp.sparray, *, name: str = "W") -> MixingMatrix:
        """Validate (:meth:`validate`) and wrap ``w``."""
        csr = sp.csr_array(w, dtype=np.float64)
        csr.eliminate_zeros()
        csr.sort_indices()
        m = MixingMatrix(csr=csr, name=name)
        m.validate()
        return m

    @property
    def n(self) -> int:
        return int(self.csr.shape[0])

    def validate(self) -> None:
        """Check the matrix is square, nonnegative and row-stochastic.

        Raises:
            TopologyError: naming the first bad entry or row.
        """
        rows, cols = self.csr.shape
        if rows != cols:
            raise TopologyError(
                f"{self.name}: a mixing matrix must be square, got shape {self.csr.shape}"
            )
        if self.csr.nnz and float(self.csr.data.min()) < -_TOL:
            k = int(np.argmin(self.csr.data))
            i = int(np.searchsorted(self.csr.indptr, k, side="right") - 1)
            j = int(self.csr.indices[k])
            raise TopologyError(
                f"{self.name}: entries must be nonnegative, got W[{i}, {j}] = {self.csr.data[k]:.6g}"
            )
        row_sums = np.asarray(self.csr.sum(axis=1)).ravel()
        bad = np.flatnonzero(np.abs(row_sums - 1.0) > 1e-8)
        if bad.size:
            i = int(bad[0])
            raise TopologyError(
                f"{self.name}: every row must sum to 1 (row-stochastic), but row {i} sums to "
                f"{row_sums[i]:.10g}" + (f" ({bad.size} rows are off)" if bad.size > 1 else "")
            )

    @cached_property
    def is_symmetric(self) -> bool:
        return is_symmetric(self.csr)

    @cached_property
    def is_doubly_stochastic(self) -> bool:
        col_sums = np.asarray(self.csr.sum(axis=0)).ravel()
        return bool(np.all(np.abs(col_sums - 1.0) <= 1e-8))

    def dense(self) -> np.ndarray:
        """The matrix as a dense ``(n, n)`` float64 array (small ``n`` only)."""
        return self.csr.toarray()

    @cached_property
    def off_diagonal(self) -> sp.csr_array:
        """``W`` with its diagonal removed: the edges that carry messages."""
        off = self.csr - sp.diags_array(self.csr.diagonal()).tocsr()
        off = sp.csr_array(off)
        off.eliminate_zeros()
        off.sort_indices()
        return off

    @cached_property
    def in_degree(self) -> np.ndarray:
        """``(n,)`` number of neighbours each node receives from (excluding itself)."""
        return np.diff(self.off_diagonal.indptr).astype(np.int64)

    @cached_property
    def out_degree(self) -> np.ndarray:
        """``(n,)`` number of neighbours each node sends to (excluding itself)."""
        return np.bincount(self.off_diagonal.indices, minlength=self.n).astype(np.int64)

    @cached_property
    def num_messages(self) -> int:
        """Point-to-point messages in one gossip round (one per directed edge)."""
        return int(self.off_diagonal.nnz)

    def in_neighbors(self, i: int) -> np.ndarray:
        """Nodes ``j != i`` whose values node ``i`` receives (``W[i, j] > 0``)."""
        off = self.off_diagonal
        return off.indices[off.indptr[i] : off.indptr[i + 1]].copy()

    def out_neighbors(self, j: int) -> np.ndarray:
        """Nodes ``i != j`` that receive node ``j``'s value (``W[i, j] > 0``)."""
        col = self.off_diagonal.T.tocsr()
        return col.indices[col.indptr[j] : col.indptr[j + 1]].copy()

    @property
    def density(self) -> float:
        return self.csr.nnz / float(self.n * self.n)


@runtime_checkable
class Topology(Protocol):
    """Who talks to whom at round ``t``, and with what weight.

    A topology is a pure function of ``t`` (and its seed): every process that knows ``t``
    computes the same ``W_t`` without talking.
    """

    @property
    def num_nodes(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def is_static(self) -> bool:
        """True when ``weights(t)`` is the same matrix for every ``t``."""
        ...

    def weights(self, t: int) -> MixingMatrix:
        """The mixing matrix ``W_t`` used at round ``t`` (``t >= 1``)."""
        ...
