"""Message compressors for compressed gossip: what a node sends instead of its dense vector.

:meth:`Compressor.compress` turns each row of an ``(m, d)`` tensor into a message, a
:class:`Payload`: ``dense`` ``(m, d)`` what receivers reconstruct (what the simulator
mixes), ``nbytes`` one message's size from the real encoding (values and indices at their
dtypes, bits packed eight to a byte), ``wire()`` the ``(m, nbytes)`` ``uint8`` messages ranks
send and ``decode`` back to values. ``decode(wire())`` equals ``dense`` bit for bit (tested
for every compressor), so the simulator mixes ``dense`` and counts ``nbytes`` without
encoding, and ranks compute what it computes with the bytes it counts.

The compressors (``d`` values per row, ``b`` bytes per value, ``k = ceil(ratio * d)``):

============  =======================================================  ==================
``kind``      message                                                  bytes per message
============  =======================================================  ==================
identity      the row itself                                           ``d b``
top_k         the ``k`` entries of largest magnitude and their indices  ``k (b + i)``
random_k      ``k`` entries chosen uniformly at random, and indices     ``k (b + i)``
qsgd          ``||v||_2`` and, per entry, a sign and a ``bits``-bit     ``b + ceil(d (bits + 1) / 8)``
              stochastic level (unbiased, Alistarh et al. 2017)
sign          ``||v||_1 / d`` and one sign bit per entry               ``b + ceil(d / 8)``
============  =======================================================  ==================

``i`` is the smallest index dtype that holds ``d - 1`` (1 byte up to ``d = 256``, 2 up to
``2^15``, else 4); ``random_k`` sends its indices too (regenerating them would need the
sender's id per received row). Random choices are counter-based draws keyed by ``(seed, t,
node, block)`` (:mod:`decent._stream`): node 17 compresses alike in the simulator, on rank
17 and in every replica.

References:
    Koloskova, Stich, Jaggi, "Decentralized Stochastic Optimization and Gossip Algorithms
    with Compressed Communication", ICML 2019, https://arxiv.org/abs/1902.00340 (CHOCO).
    Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient Quantization and
    Encoding", NeurIPS 2017, https://arxiv.org/abs/1610.02132. Stich, Cordonnier, Jaggi,
    "Sparsified SGD with Memory", NeurIPS 2018, https://arxiv.org/abs/1809.07599.
    Karimireddy et al., "Error Feedback Fixes SignSGD", ICML 2019,
    https://arxiv.org/abs/1901.09847 (scaled sign).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import annotated_types as at
import torch

from decent import _stream
from decent._params import check_declared, hparam
from decent.comm.base import AliveRanks, Exchange, Stale

CompressorKind = Literal["identity", "top_k", "random_k", "qsgd", "sign"]
COMPRESSORS: tuple[str, ...] = ("identity", "top_k", "random_k", "qsgd", "sign")

_STREAM = 0xC0A7_0001  # the compressors' counter-based draws
_MAX_BITS = 16


class CompressorError(ValueError):
    """Bad compressor settings; the message names the field and the allowed values."""


@dataclass(frozen=True)
class Payload:
    """One round's compressed messages of ``m`` rows.

    Attributes:
        dense: ``(m, d)`` the values receivers reconstruct (a fresh tensor).
        nbytes: bytes of one row's message, from the real encoding.
        encode: ``() -> (m, nbytes) uint8``, the messages as sent.
        decode: ``(r, nbytes) uint8 -> (r, d)``, received messages back to values.
    """

    dense: torch.Tensor
    nbytes: int
    encode: Callable[[], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]

    def wire(self) -> torch.Tensor:
        """The encoded messages, ``(m, nbytes)`` ``uint8``."""
        out = self.encode()
        assert out.dtype == torch.uint8 and out.shape == (self.dense.shape[0], self.nbytes)
        return out


def _index_dtype(d: int) -> torch.dtype:
    if d <= 1 << 8:
        return torch.uint8
    if d <= 1 << 15:
        return torch.int16
    return torch.int32


def _as_bytes(x: torch.Tensor) -> torch.Tensor:
    """``(m, k)`` of any dtype -> ``(m, k * itemsize)`` uint8 (the same memory)."""
    return x.contiguous().view(torch.uint8)


def _from_bytes(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if b.ndim == 2 and (b.stride(1) != 1 or b.stride(0) != b.shape[1]):
        b = b.clone(memory_format=torch.contiguous_format)  # a one-row slice keeps its stride
    return b.view(dtype)


_POW2: dict[torch.device, torch.Tensor] = {}


def _weights(device: torch.device) -> torch.Tensor:
    w = _POW2.get(device)
    if w is None:
        w = _POW2[device] = (2 ** torch.arange(8, device=device)).to(torch.uint8)
    return w


_GATHER = 0x0102040810204080
"""``sum_j b_j 2^(8 j) * _GATHER`` has ``sum_j b_j 2^j`` in its top byte for bytes ``b_j`` in
``{0, 1}``: byte ``j`` lands on bit ``56 + j``, every other product above bit 63 or at its own
bit below 56 (no two collide, so nothing carries into the top byte)."""


def _gather_bytes(flags: torch.Tensor) -> torch.Tensor:
    """``(..., 8)`` uint8 in ``{0, 1}`` -> ``(...)`` int64 ``sum_j flags[..., j] 2^j``."""
    words = flags.contiguous().view(torch.int64).squeeze(-1)  # 8 bytes, little-endian
    return ((words * _GATHER) >> 56) & 0xFF


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """``(m, L)`` bool -> ``(m, ceil(L / 8))`` uint8, bit ``j`` of byte ``c`` = ``bits[:, 8c + j]``."""
    m, length = bits.shape
    pad = (-length) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(m, pad)], dim=1)
    groups = bits.contiguous().view(torch.uint8).view(m, -1, 8)
    return _gather_bytes(groups).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``(m, c)`` uint8 -> ``(m, length)`` bool."""
    m = packed.shape[0]
    bits = (packed[:, :, None] & _weights(packed.device)) != 0
    return bits.view(m, -1)[:, :length]


def _planes(code: torch.Tensor, width: int) -> torch.Tensor:
    """``(m, d)`` int32 codes below ``2^width`` -> ``(m, d * width)`` bool, low bit first."""
    m, d = code.shape
    shifts = torch.arange(width, dtype=torch.int32, device=code.device)
    return ((code[:, :, None] >> shifts) & 1).to(torch.bool).view(m, d * width)


def _codes(bits: torch.Tensor, d: int, width: int) -> torch.Tensor:
    """Inverse of :func:`_planes`: ``(m, >= d * width)`` bool -> ``(m, d)`` int32."""
    m = bits.shape[0]
    planes = bits[:, : d * width].reshape(m, d, width)
    if width <= 8:  # pad each code's planes to 8 bytes and gather them into one byte
        flags = torch.zeros(m, d, 8, dtype=torch.uint8, device=bits.device)
        flags[:, :, :width] = planes.view(torch.uint8)
        return _gather_bytes(flags).to(torch.int32)
    weights = (1 << torch.arange(width, device=bits.device)).to(torch.int32)
    return (planes.to(torch.int32) * weights).sum(dim=2, dtype=torch.int32)


@dataclass(frozen=True)
class Compressor:
    """A message compressor (see the module docstring for the kinds and their sizes).

    Args:
        kind: ``identity``, ``top_k``, ``random_k``, ``qsgd`` or ``sign``.
        ratio: fraction of entries ``top_k`` and ``random_k`` keep, in ``(0, 1]``.
        bits: ``qsgd``'s level bits per entry (``2^bits - 1`` levels, plus a sign bit), >= 1.
        seed: the key of the random choices (``random_k``, ``qsgd``).
        contractive: ``qsgd`` sends ``Q(v) / tau``, ``tau = 1 + min(d / s^2, sqrt(d) / s)``
            (``s = 2^bits - 1``; the same size: the sent norm is divided), so that
            ``E ||Q(v) / tau - v||^2 <= (1 - 1 / tau) ||v||^2``, the contraction CHOCO's
            error feedback needs (the unbiased ``Q``'s variance, up to ``(tau - 1) ||v||^2``,
            makes its residual grow; Koloskova et al. 2019 rescale the same way).

    Raises:
        CompressorError: a setting outside its range, naming the field.

    Example:
        >>> c = Compressor("top_k", ratio=0.5)
        >>> v = torch.tensor([[3.0, -4.0, 1.0, 0.5]], dtype=torch.float32)
        >>> p = c.compress(v, t=1, nodes=torch.tensor([0]), num_nodes=1)
        >>> p.dense.tolist(), p.nbytes
        ([[3.0, -4.0, 0.0, 0.0]], 10)
    """

    kind: CompressorKind = hparam(
        "identity", doc="The message compressor: identity, top_k, random_k, qsgd or sign."
    )
    ratio: float = hparam(
        1.0, at.Interval(gt=0.0, le=1.0), doc="Fraction of entries top_k and random_k send."
    )
    bits: int = hparam(
        4,
        at.Interval(ge=1, le=_MAX_BITS),
        doc="qsgd: level bits per entry (2^bits - 1 levels, plus a sign bit).",
    )
    seed: int = hparam(0, at.Ge(0), doc="Key of the compressors' random choices (random_k, qsgd).")
    contractive: bool = False

    def __post_init__(self) -> None:
        check_declared(self, "compressor", CompressorError)

    @property
    def exact(self) -> bool:
        """Whether messages are the rows themselves (``identity``)."""
        return self.kind == "identity"

    def kept(self, d: int) -> int:
        """``k = ceil(ratio * d)``, the entries ``top_k`` and ``random_k`` send (>= 1)."""
        return max(1, min(d, math.ceil(self.ratio * d - 1e-9)))

    def message_bytes(self, d: int, dtype: torch.dtype) -> int:
        """Bytes of one message of a ``d``-vector of ``dtype``."""
        b = torch.empty((), dtype=dtype).element_size()
        if self.kind == "identity":
            return d * b
        if self.kind in ("top_k", "random_k"):
            idx = torch.empty((), dtype=_index_dtype(d)).element_size()
            return self.kept(d) * (b + idx)
        if self.kind == "qsgd":
            return b + math.ceil(d * (self.bits + 1) / 8)
        return b + math.ceil(d / 8)

    def describe(self) -> str:
        """``"top_k(ratio=0.1)"``."""
        if self.kind in ("top_k", "random_k"):
            return f"{self.kind}(ratio={self.ratio:g})"
        if self.kind == "qsgd":
            return f"qsgd(bits={self.bits}{', /tau' if self.contractive else ''})"
        return self.kind

    def qsgd_tau(self, d: int) -> float:
        """``tau = 1 + min(d / s^2, sqrt(d) / s)``, ``s = 2^bits - 1`` (1 unless contractive)."""
        if not (self.contractive and self.kind == "qsgd"):
            return 1.0
        s = (1 << self.bits) - 1
        return 1.0 + min(d / s**2, math.sqrt(d) / s)

    # -- compress --------------------------------------------------------------------
    def compress(
        self, v: torch.Tensor, t: int, nodes: torch.Tensor, num_nodes: int, block: int = 0
    ) -> Payload:
        """Compress every row of ``v`` ``(m, d)``, row ``r`` node ``nodes[r]``'s message (ids
        repeat for replica rows); ``t``, ``num_nodes`` and ``block`` (which of several
        vectors a node sends this round) key the random choices."""
        if v.ndim != 2 or nodes.shape != (v.shape[0],):
            raise ValueError(
                f"compress expects v (m, d) and nodes (m,), got {tuple(v.shape)} and "
                f"{tuple(nodes.shape)}"
            )
        key, d = self.seed * 4096 + block, v.shape[1]

        def draw() -> torch.Tensor:  # (m, d) uniforms keyed by (seed, t, node, block)
            ids = nodes.to(torch.int64)
            if ids.shape[0] < 2 or bool((ids[1:] > ids[:-1]).all()):  # one row per node
                return _stream.uniform(key, _STREAM, t, ids, d, num_nodes)
            uniq, inverse = torch.unique(nodes, return_inverse=True)
            u = _stream.uniform(key, _STREAM, t, uniq.to(torch.int64), d, num_nodes)
            return u if uniq.shape[0] == nodes.shape[0] else u[inverse]

        sparse = self.kind in ("top_k", "random_k")
        payload: Payload = getattr(self, "_sparse" if sparse else "_" + self.kind)(v, draw)
        return payload

    def _identity(self, v: torch.Tensor, draw: Callable[[], torch.Tensor]) -> Payload:
        d, dtype = v.shape[1], v.dtype
        dense = v.clone()
        return Payload(
            dense=dense,
            nbytes=self.message_bytes(d, dtype),
            encode=lambda: _as_bytes(dense),
            decode=lambda wire: _from_bytes(wire, dtype),
        )

    def _sparse(self, v: torch.Tensor, draw: Callable[[], torch.Tensor]) -> Payload:
        d = v.shape[1]
        dtype, itype = v.dtype, _index_dtype(d)
        k = self.kept(d)
        # top_k: the largest magnitudes; random_k: k distinct coordinates, uniform over the
        # subsets of size k, as the k largest of d independent uniforms (ties have
        # probability ~2^-24 per pair and are broken by index)
        score = v.abs() if self.kind == "top_k" else draw().to(v.device)
        idx = score.topk(k, dim=1, sorted=False).indices
        vals = v.gather(1, idx)
        dense = torch.zeros_like(v).scatter_(1, idx, vals)
        vb = k * v.element_size()

        def encode() -> torch.Tensor:
            return torch.cat([_as_bytes(vals), _as_bytes(idx.to(itype))], dim=1)

        def decode(wire: torch.Tensor) -> torch.Tensor:
            got = _from_bytes(wire[:, :vb], dtype)
            where = _from_bytes(wire[:, vb:], itype).to(torch.int64)
            out = torch.zeros(wire.shape[0], d, dtype=dtype, device=wire.device)
            return out.scatter_(1, where, got)

        return Payload(dense, self.message_bytes(d, dtype), encode, decode)

    def _qsgd(self, v: torch.Tensor, draw: Callable[[], torch.Tensor]) -> Payload:
        d = v.shape[1]
        dtype, bits = v.dtype, self.bits
        s = (1 << bits) - 1
        true_norm = torch.linalg.vector_norm(v, dim=1, keepdim=True)
        safe = torch.where(true_norm > 0, true_norm, torch.ones_like(true_norm))
        tau = self.qsgd_tau(d)
        norm = true_norm / tau if tau != 1.0 else true_norm  # what is sent
        u = draw().to(device=v.device, dtype=dtype)
        # level = floor(s |v| / ||v|| + u): E[level] = s |v| / ||v||, so E[Q(v)] = v
        level = torch.floor(v.abs() / safe * s + u).clamp_(0, s).to(torch.int32)
        neg = v < 0
        dense = _qsgd_values(norm, level, neg, s, dtype)
        vb = v.element_size()

        def encode() -> torch.Tensor:
            code = level | (neg.to(torch.int32) << bits)  # sign above the level bits
            return torch.cat([_as_bytes(norm), pack_bits(_planes(code, bits + 1))], dim=1)

        def decode(wire: torch.Tensor) -> torch.Tensor:
            got_norm = _from_bytes(wire[:, :vb], dtype)
            code = _codes(unpack_bits(wire[:, vb:], d * (bits + 1)), d, bits + 1)
            return _qsgd_values(got_norm, code & s, (code >> bits) != 0, s, dtype)

        return Payload(dense, self.message_bytes(d, dtype), encode, decode)

    def _sign(self, v: torch.Tensor, draw: Callable[[], torch.Tensor]) -> Payload:
        d, dtype = v.shape[1], v.dtype
        scale = v.abs().sum(dim=1, keepdim=True) / d
        neg = v < 0
        dense = _signed(scale, neg)
        vb = v.element_size()

        def encode() -> torch.Tensor:
            return torch.cat([_as_bytes(scale), pack_bits(neg)], dim=1)

        def decode(wire: torch.Tensor) -> torch.Tensor:
            return _signed(_from_bytes(wire[:, :vb], dtype), unpack_bits(wire[:, vb:], d))

        return Payload(dense, self.message_bytes(d, dtype), encode, decode)


def _qsgd_values(
    norm: torch.Tensor, level: torch.Tensor, neg: torch.Tensor, s: int, dtype: torch.dtype
) -> torch.Tensor:
    """``sign * ||v|| * level / s``, the one reconstruction both ends run."""
    mag = level.to(dtype) * (norm / s)
    return torch.where(neg, -mag, mag)


def _signed(scale: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``scale * sign`` with ``sign(0) = +1`` (one bit per entry)."""
    return torch.where(neg, -scale, scale).expand(neg.shape).clone()


def row_nodes(node_ids: torch.Tensor, rows: int) -> torch.Tensor:
    """The global node id of every row: ``node_ids`` itself, or repeated for replica rows.

    A replica batch stacks ``R`` copies of each node node-major (row ``i * R + r``), so
    every replica of node ``i`` draws node ``i``'s numbers: the single run's.
    """
    m = int(node_ids.shape[0])
    if rows == m:
        return node_ids
    if m == 0 or rows % m:
        raise ValueError(f"{rows} rows do not stack replicas of {m} nodes")
    return node_ids.repeat_interleave(rows // m)


def compressed_refusal(comm: object, name: str) -> str | None:
    """Why ``comm`` cannot carry method ``name``'s compressed gossip, or ``None``."""
    if isinstance(comm, Stale) and comm.staleness:
        return (
            f"{name} adds each message q to s = sum_j W_ij hat_j once, in its round; "
            f"{type(comm).__name__} mixes stale values (staleness {comm.staleness}): stale "
            "copies are a method CHOCO is not derived for, and a varying delay skips or repeats q"
        )
    if not isinstance(comm, Exchange):
        return (
            f"{name} sends q through one exchange of W_t per round, which {type(comm).__name__} "
            "lacks (Chebyshev's P_K(W) would send dense W^k q after its first exchange); use "
            "the simulator or sync ranks"
        )
    if isinstance(comm, AliveRanks):
        return (
            f"{name} needs the same W every round (s = sum_t W q_t = W hat), but "
            f"{type(comm).__name__} rebuilds W on the survivors when a rank is lost; use the "
            "simulator or sync ranks"
        )
    return None


_CARRIERS: weakref.WeakSet[object] = weakref.WeakSet()


def mix_compressed(comm: object, payload: Payload, t: int, name: str) -> torch.Tensor:
    """``W_t @ payload.dense`` for the held rows over any transport; counts one gossip round
    of ``payload.nbytes`` per message.

    Ranks send each neighbour the encoded messages it needs (``payload.wire()``) and decode
    what arrives; a process that holds every node moves nothing and encodes nothing. As
    ``decode(wire())`` is ``dense`` bit for bit, every transport mixes the same values.

    Raises:
        TypeError: ``comm`` cannot carry method ``name``'s compressed gossip (says why).
    """
    if comm not in _CARRIERS:  # the protocol checks cost 40 us: once per communicator
        why = compressed_refusal(comm, name)
        if why is not None:
            raise TypeError(why)
        _CARRIERS.add(comm)
    comm = cast(Exchange, comm)
    m = payload.dense.shape[0]
    every = comm.node_ids.numel() == comm.num_nodes
    z = comm.post(payload.dense if every else payload.wire(), t).wait()
    comm.count(t, payload.nbytes)
    z = torch.cat([payload.dense, payload.decode(z[m:])]) if z.shape[0] > m else payload.dense
    return comm.combine(z, t)


__all__ = [
    "COMPRESSORS",
    "Compressor",
    "CompressorError",
    "CompressorKind",
    "Payload",
    "compressed_refusal",
    "mix_compressed",
    "pack_bits",
    "row_nodes",
    "unpack_bits",
]
