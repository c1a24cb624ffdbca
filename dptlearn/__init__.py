"""dptlearn: how a Vision Transformer's tokens become dense predictions through a DPT head.

The head is built from one small module per stage (see ``docs/API.md``):

    tokens.py      pick the hooked layers, drop prefix/readout tokens
    grid.py        token sequence (B, N, C)  <->  image grid (B, C, nh, nw)
    reassemble.py  resample each hooked grid to 1/4, 1/8, 1/16, 1/32 of the image
    fusion.py      residual conv units and RefineNet-style fusion blocks
    head.py        the regression head (to full resolution)
    postprocess.py DUSt3R's depth and confidence parametrisations
    dpt.py         the assembled head
    dust3r.py      DUSt3R's factory and checkpoint loader (every compatibility quirk)
"""
from .device import get_device

__version__ = "0.1.0"
__all__ = ["__version__", "get_device"]
