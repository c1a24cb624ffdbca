"""dptlearn.train: train a tiny DUSt3R (backbone + DPT heads) on synthetic scenes.

    data.py      SyntheticScenes: seeded two-view scenes with exact depth, point maps and masks; augment
    backbone.py  TinyTwoViewBackbone, TinyDUSt3RConfig, TinyDUSt3R (backbone + dust3r_dpt_head heads)
    losses.py    DUSt3R's confidence-aware point-map loss, a plain L1 depth loss
    loop.py      train, predict, evaluate, depth_metrics, save_checkpoint / load_checkpoint
    pretrained.py  load_pretrained: the shipped checkpoint (weights/tiny_dust3r.pt, made by `make pretrain`)

It imports the head (``dptlearn.dust3r``), never the reverse.
"""
from .pretrained import load_pretrained

__all__ = ["load_pretrained"]
