"""A low-latency path for a few skeletons at a time (live capture): :meth:`SkeletonSolver.solve` recorded once per
batch size with ``torch.jit.trace`` and replayed without Python.

For one skeleton the solver's time is almost all per-operation overhead (a few thousand small tensor operations,
each dispatched from Python); the recorded graph runs the same operations from C++, about 2.5x faster. The
arithmetic is the same, so the results equal the batched path's to float rounding. The input checks, which look
at the data, run in Python before the replay. A recording keeps the network's weights as they were: make a new
:class:`LowLatencySolver` after changing them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from lib.solver.pipeline import SkeletonSolver, Solution, TwistNetwork, check_skeleton

# Batches up to this size are worth recording; larger ones are dominated by arithmetic, not overhead.
MAX_LOW_LATENCY_BATCH = 16
# Replays run when recording: torch.jit optimises a recording on its second replay (measured: ~0.3-0.5 s once), which
# then happens before the first live frame instead of on it.
WARM_UP_REPLAYS = 2


class LowLatencySolver:
    """``solver.solve(joints, network)`` for small batches, recorded per (batch size, dtype, device) on first use.

    Args:
        solver: the skeleton solver.
        network: its twist network (None: AnalyIK only); put it in eval mode first.
    """

    def __init__(self, solver: SkeletonSolver, network: TwistNetwork | None = None):
        self.solver = solver
        self.network = network
        self._recorded: dict[tuple, torch.jit.ScriptFunction] = {}

    def _outputs(self, joints: Tensor) -> tuple[Tensor, ...]:
        solution = self.solver.solve(joints, self.network)
        phis = tuple(solution.phis) if solution.phis is not None else ()
        return (
            solution.betas,
            solution.rest,
            solution.refined,
            solution.rotmats,
            solution.translation,
            solution.analytic_rotmats,
            *phis,
        )

    def _recording(self, joints: Tensor) -> torch.jit.ScriptFunction:
        key = (joints.shape[0], joints.dtype, joints.device)
        if key not in self._recorded:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the checks' Python bools are expected
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.compile is no alternative: minutes
                self._outputs(joints)  # builds the network's inference weights outside the recording
                recording = torch.jit.trace(self._outputs, (joints,), check_trace=False)
                for _ in range(WARM_UP_REPLAYS):  # torch.jit profiles, then optimises, on its first replays
                    recording(joints)
                self._recorded[key] = recording
        return self._recorded[key]

    @torch.no_grad()
    def solve(self, joints: Tensor) -> Solution:
        """(B, J, 3) skeletons in metres -> :class:`Solution`, as :meth:`SkeletonSolver.solve` with the network."""
        check_skeleton(self.solver.tree, joints)
        if joints.shape[0] > MAX_LOW_LATENCY_BATCH:
            return self.solver.solve(joints, self.network)
        betas, rest, refined, rotmats, translation, analytic, *phis = self._recording(joints)(joints)
        method = "analyik" if self.network is None else "mixik"
        return Solution(betas, rest, refined, rotmats, translation, method, analytic, list(phis) or None)
