"""dptlearn: how a Vision Transformer's tokens become dense predictions through a DPT head.

The package's top level is the head, one small module per stage, then each model's factory and
the tools around the head; beneath it, in their own folders, the tools built on the head (they
import it, never the reverse). See ``docs/API.md``; ``tests/test_docs.py`` checks that this tree
names every module and sub-package:

    dptlearn/
      tokens.py          pick the hooked layers, drop or mix prefix/readout tokens
      grid.py            token sequence (B, N, C)  <->  image grid (B, C, nh, nw)
      reassemble.py      the four-level pyramid at 1/4, 1/8, 1/16, 1/32 of the image
      fusion.py          residual conv units, RefineNet-style fusion blocks, the coarse-to-fine path
      head.py            the regression head (to full resolution)
      postprocess.py     DUSt3R's depth and confidence parametrisations
      dpt.py             the assembled head, DPTHead
      dust3r.py          DUSt3R's factory and checkpoint loader (every compatibility quirk)
      depth_head.py      DepthHead: a DPT head read as one depth map (DPT-Large, Depth Anything)
      linear_head.py     LinearHead: DUSt3R's linear head, one Linear per token painting its patch
      dpt_large.py       DPT-Large's head
      depth_anything.py  Depth Anything V2's heads
      hf.py              a head holding the weights of a transformers depth model
      released.py        both heads of a DUSt3R released checkpoint file
      export.py          ONNX export
      fast.py            optimize_for_inference: the opt-in fast path
      device.py          the one device switch
      viz/               shape formatting, the shape tracer, figures by topic
      course/            exercise checks, the exercise generator, the grader
      train/             synthetic scenes, the tiny backbone, losses, the training loop, the shipped weights

``from dptlearn import checks`` (used by the exercise notebooks) resolves to ``dptlearn.course.checks``.
"""
import importlib

from .device import get_device

__version__ = "0.1.0"
__all__ = ["__version__", "get_device"]


def __getattr__(name: str):
    # The exercise notebooks say ``from dptlearn import checks``; the checks live in course/.
    if name == "checks":
        return importlib.import_module("dptlearn.course.checks")
    raise AttributeError(f"module 'dptlearn' has no attribute {name!r}")
