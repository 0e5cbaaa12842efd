"""The DDP drop-in: any ``nn.Module`` in the user's own loop, trained by decent's algorithms.

:class:`DecentralizedDataParallel` wraps a model like
``torch.nn.parallel.DistributedDataParallel`` and runs the same algorithm dataclasses as the
simulator on one ``(1, d)`` row per rank, through
:class:`~decent.comm.dist.DistCommunicator`. See ``docs/parallel.md``.
"""

from decent.parallel._ddp import BUFFER_MODES, DecentralizedDataParallel, ParallelError

__all__ = ["BUFFER_MODES", "DecentralizedDataParallel", "ParallelError"]
