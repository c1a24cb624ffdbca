"""Checks that teach: one per exercise, called from the exercise notebooks.

``checks.<name>(student_obj, device=None)`` builds dptlearn's reference with seeded weights,
runs the learner's code on the same seeded inputs (through ``dptlearn.course.probe``, which
records the results as pure data), compares, and names known mistakes (``align_corners``
wrong, a reshape where a rearrange was needed, a missing pre-activation, a bias DUSt3R does
not have, ``exp`` instead of ``expm1``...). It prints ``✓ <name>: passed (<what was checked>)``
or raises ``CheckFailed`` (an ``AssertionError``) whose message starts with ``<name>:``.
Using dptlearn's own reference for the exercise fails with the flag ``"reference"``.

``CHECKS`` maps each name to its ``Check``; a grader uses the three phases separately
(``case(seed)`` and ``judge(case, results)`` in a trusted process, ``probe.execute`` in the
sandboxed kernel): see ``harness.py``.

    tokens.py      notebook 01   hook_indices, select_hooked_tokens, apply_readout, ReadoutProject
    grid.py        notebook 02   patch_grid, tokens_to_grid, grid_to_tokens
    reassemble.py  notebook 03   reassemble_branch, Reassemble
    fusion.py      notebook 04   residual_conv_unit, ResidualConvUnit, crop_to, FusionBlock, fuse_pyramid
    head.py        notebook 05   RegressionHead, head_sequential, depth_activation, conf_activation, postprocess
    dust3r.py      notebook 06   MyDUSt3RHead, convert_dust3r_state_dict (the capstone: the learner's parts)
    bugs.py        notebook 12   bug_* (find the bug: the fix, and nothing else changed)
    predict.py     notebook 13   predict_shapes, predict_params (written down before running, graded exactly)
    transfer.py    notebook 09   transfer_depth_anything, transfer_dpt_large (the learner's parts, vs transformers)
"""
from __future__ import annotations

from ..answers import PART_NOTEBOOK
from .bugs import BugAlign, BugCrop, BugExp, BugGrid, BugInplace, BugReadout
from .dust3r import ConvertDust3rStateDict, MyDUSt3RHeadCheck
from .fusion import CropTo, FusePyramid, FusionBlockCheck, ResidualConvUnitCheck, ResidualConvUnitFn
from .grid import GridToTokens, PatchGrid, TokensToGrid
from .harness import Case, Check, CheckFailed
from .head import ConfActivation, DepthActivation, HeadSequential, Postprocess, RegressionHeadCheck
from .predict import PredictParams, PredictShapes
from .reassemble import ReassembleBranchCheck, ReassembleCheck
from .tokens import ApplyReadout, HookIndices, ReadoutProjectCheck, SelectHookedTokens
from .transfer import DA_PARTS, DL_PARTS, TransferDepthAnything, TransferDPTLarge

hook_indices = HookIndices()
select_hooked_tokens = SelectHookedTokens()
apply_readout = ApplyReadout()
ReadoutProject = ReadoutProjectCheck()
patch_grid = PatchGrid()
tokens_to_grid = TokensToGrid()
grid_to_tokens = GridToTokens()
reassemble_branch = ReassembleBranchCheck()
Reassemble = ReassembleCheck()
residual_conv_unit = ResidualConvUnitFn()
ResidualConvUnit = ResidualConvUnitCheck()
crop_to = CropTo()
FusionBlock = FusionBlockCheck()
fuse_pyramid = FusePyramid()
RegressionHead = RegressionHeadCheck()
head_sequential = HeadSequential()
depth_activation = DepthActivation()
conf_activation = ConfActivation()
postprocess = Postprocess()
_BEFORE_CAPSTONE: dict[str, Check] = {c.name: c for c in (
    hook_indices, select_hooked_tokens, apply_readout, ReadoutProject,
    patch_grid, tokens_to_grid, grid_to_tokens,
    reassemble_branch, Reassemble,
    residual_conv_unit, ResidualConvUnit, crop_to, FusionBlock, fuse_pyramid,
    RegressionHead, head_sequential, depth_activation, conf_activation, postprocess)}
# The capstone judges each part the learner hands in by that part's own check: these very instances.
MyDUSt3RHead = MyDUSt3RHeadCheck({name: _BEFORE_CAPSTONE[name] for name in PART_NOTEBOOK})
convert_dust3r_state_dict = ConvertDust3rStateDict(MyDUSt3RHead.part_checks)

_CHALLENGES: dict[str, Check] = {c.name: c for c in (
    BugGrid(), BugAlign(), BugCrop(), BugReadout(), BugExp(), BugInplace(), PredictShapes(), PredictParams(),
    TransferDepthAnything({name: _BEFORE_CAPSTONE[name] for name in DA_PARTS}),
    TransferDPTLarge({name: _BEFORE_CAPSTONE[name] for name in DL_PARTS}))}
globals().update(_CHALLENGES)   # checks.bug_fuse_levels, checks.predict_shapes, ...

CHECKS: dict[str, Check] = {**_BEFORE_CAPSTONE, MyDUSt3RHead.name: MyDUSt3RHead,
                            convert_dust3r_state_dict.name: convert_dust3r_state_dict, **_CHALLENGES}



def authored(answer, device=None) -> None:
    """The check cell of an exercise checked against the teacher's own solution
    (docs/authoring.md): its inputs and test are the teacher's, so nothing runs in the learner's
    notebook; the grader runs ``answer`` on secret inputs and compares it with the solution."""
    if answer is None:
        raise CheckFailed("authored", "nothing to hand in yet: define your answer in the cell above")
    print("answer handed in: the grader checks it against your teacher's solution, on inputs "
          "it chooses, when grading")


__all__ = list(CHECKS) + ["CHECKS", "Case", "Check", "CheckFailed", "authored"]
