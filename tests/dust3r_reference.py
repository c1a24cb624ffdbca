"""An independent, functional re-statement of DUSt3R's DPT head, for tests only.

Written straight from ``shared/reference/dust3r_dpt_facts.md`` (sections 3-6): it reads a
DUSt3R-layout state dict (keys ``dpt.…``) and uses only ``torch.nn.functional``, with none
of dptlearn's modules, so comparing the two checks dptlearn against the facts rather than
against itself. Follows the facts step by step: hooks [0, L/2, 3L/4, L], row-major
rearrange, act_postprocess, layer_rn (no bias), refinenet4..1 with the odd-grid crop
*after* refinenet4, head with align_corners=True, then exp depth / exp conf.
"""
import torch
import torch.nn.functional as F


def _conv(sd, key, x, stride=1, padding=0):
    b = sd.get(key + ".bias")
    return F.conv2d(x, sd[key + ".weight"], b, stride=stride, padding=padding)


def _rcu(sd, key, x):
    out = F.relu(x)
    out = _conv(sd, key + ".conv1", out, padding=1)
    out = F.relu(out)
    out = _conv(sd, key + ".conv2", out, padding=1)
    return x + out


def _refinenet(sd, k, *xs):
    key = f"dpt.scratch.refinenet{k}"
    out = xs[0]
    if len(xs) == 2:
        out = out + _rcu(sd, key + ".resConfUnit1", xs[1])
    out = _rcu(sd, key + ".resConfUnit2", out)
    out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
    return _conv(sd, key + ".out_conv", out)


def reference_raw(sd, tokens, image_size, dec_depth=12, patch=16):
    H, W = image_size
    nh, nw = H // patch, W // patch
    hooks = [0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth]
    layers = []
    for i, h in enumerate(hooks):
        t = tokens[h]
        B, N, C = t.shape
        g = t.transpose(1, 2).reshape(B, C, nh, nw)  # row-major tokens: index = r * nw + c
        a = f"dpt.act_postprocess.{i}"
        g = _conv(sd, a + ".0", g)
        if i == 0:
            g = F.conv_transpose2d(g, sd[a + ".1.weight"], sd[a + ".1.bias"], stride=4)
        elif i == 1:
            g = F.conv_transpose2d(g, sd[a + ".1.weight"], sd[a + ".1.bias"], stride=2)
        elif i == 3:
            g = _conv(sd, a + ".1", g, stride=2, padding=1)
        g = F.conv2d(g, sd[f"dpt.scratch.layer_rn.{i}.weight"], None, padding=1)
        layers.append(g)
    p4 = _refinenet(sd, 4, layers[3])[:, :, : layers[2].shape[2], : layers[2].shape[3]]
    p3 = _refinenet(sd, 3, p4, layers[2])
    p2 = _refinenet(sd, 2, p3, layers[1])
    p1 = _refinenet(sd, 1, p2, layers[0])
    out = _conv(sd, "dpt.head.0", p1, padding=1)
    out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
    out = F.relu(_conv(sd, "dpt.head.2", out, padding=1))
    return _conv(sd, "dpt.head.4", out)


def reference_output(sd, tokens, image_size, dec_depth=12, patch=16):
    """DUSt3R's head with depth_mode ('exp', -inf, inf) and conf_mode ('exp', 1, inf)."""
    raw = reference_raw(sd, tokens, image_size, dec_depth, patch)
    fmap = raw.permute(0, 2, 3, 1)
    xyz = fmap[..., :3]
    d = xyz.norm(dim=-1, keepdim=True)
    pts = xyz / d.clip(min=1e-8) * torch.expm1(d)
    conf = 1 + fmap[..., 3].exp()
    return {"pts3d": pts, "conf": conf}


def random_dust3r_state_dict(keys_and_shapes, seed=0, dtype=torch.float64, scale=None):
    """Random weights for every key of a DUSt3R head (aliases made identical), fan-in scaled."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in keys_and_shapes:
        if key.startswith("dpt.scratch.layer") and "_rn.weight" in key and "layer_rn" not in key:
            continue
        fan_in = 1
        for s in (shape[1:] if len(shape) > 1 else shape):
            fan_in *= s
        std = scale if scale is not None else (1.0 / fan_in) ** 0.5
        sd[key] = torch.randn(shape, generator=g, dtype=dtype) * std
    for i in range(4):
        sd[f"dpt.scratch.layer{i + 1}_rn.weight"] = sd[f"dpt.scratch.layer_rn.{i}.weight"].clone()
    return sd
