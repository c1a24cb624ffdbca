"""Checks of the transfer challenge (solutions/09_transfer.ipynb): another member of the DPT family
built from the learner's own parts, with no lecture cell to copy.

``transfer_depth_anything``: Depth Anything V2-S's head. The learner hands in
``{"parts": load_parts(), "head": MyDepthAnythingHead}``. As in the capstone (``dust3r.py``), the
parts the head is built from are judged first, each by its own check; then the head is built
(``MyDepthAnythingHead()``, DA-V2-S's widths are the learner's to choose), given weights under
dptlearn's parameter names, and run on 12 DINOv2-S layer outputs ``(B, 1 + N, 384)`` on an odd and
an even patch grid.

**The reference is transformers'** ``DepthAnythingForDepthEstimation`` with random weights, on the
trusted side only: ``case`` builds it from a small config with DA-V2-S's neck and head widths,
reseeds its neck and head, converts its weights to dptlearn's names (``dptlearn.hf.from_hf``) for
the learner's module and records ``model.neck`` + ``model.head`` on the hooked tokens as the
expected depth. The plan holds only tensors: nothing of transformers or of dptlearn's head reaches
the sandbox. Known mistakes (hooks, DUSt3R's crop instead of the resize, the head's last ReLU) are
re-run on dptlearn's copy of the same weights and named.
"""
from __future__ import annotations

import copy
import types

import torch
import torch.nn.functional as F

from ..answers import PART_NOTEBOOK
from .dust3r import Capstone
from .harness import Case, build, call, generator, load, randomize_

DA_HOOKS = (2, 5, 8, 11)
DA_WIDTH, DA_DIMS, DA_D, DA_LAST, DA_PATCH = 384, (48, 96, 192, 384), 64, 32, 14
DA_PARTS = ("patch_grid", "tokens_to_grid", "select_hooked_tokens", "Reassemble", "ResidualConvUnit", "FusionBlock")
GRIDS = ((3, 5), (4, 4))      # patch grids: odd (the coarsest level is 2x3, doubled 4x6 > 3x5) and even
B = 2
HOOK_SLIPS = (((0, 5, 8, 11), "hooks [0, 5, 8, 11] are DUSt3R's rule (hook_indices(11)); Depth Anything V2-S "
                              "taps four evenly spaced ViT-S blocks (lecture 09's table)"),
              ((1, 4, 7, 10), "hooks one block early: the hooks are 0-based block indices (lecture 09's table)"),
              ((3, 6, 9, 11), "hooks one block late: the hooks are 0-based block indices (lecture 09's table)"))


def _transformers():
    """``import transformers``, without the TqdmWarning "IProgress not found" that its import of tqdm.auto
    prints in a Jupyter kernel without ipywidgets (the checks draw no progress bar); other warnings stay."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import transformers
    return transformers


def hf_depth_anything(seed: int):
    """transformers' DepthAnythingForDepthEstimation with DA-V2-S's neck and head, seeded weights
    (a 4-block DINOv2-S backbone that the check never runs)."""
    transformers = _transformers()
    backbone = transformers.Dinov2Config(hidden_size=DA_WIDTH, num_hidden_layers=4, num_attention_heads=6,
                                         intermediate_size=8, image_size=2 * DA_PATCH, patch_size=DA_PATCH,
                                         out_indices=[1, 2, 3, 4], reshape_hidden_states=False, apply_layernorm=True)
    cfg = transformers.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=DA_WIDTH,
                                           patch_size=DA_PATCH, head_hidden_size=DA_LAST,
                                           neck_hidden_sizes=list(DA_DIMS), fusion_hidden_size=DA_D)
    return _random_neck_and_head(transformers.DepthAnythingForDepthEstimation, cfg, "transfer_depth_anything", seed)


def _random_neck_and_head(model_class, cfg, name: str, seed: int):
    """``model_class(cfg)`` in eval mode, built under a fixed torch seed (the global RNG untouched), its
    neck and head then drawn from the exercise's own generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(cfg).eval()
    g = generator(f"{name}.weights", seed, 0)
    randomize_(model.neck, g)
    randomize_(model.head, g)
    return model


def centre_last_conv(conv, run) -> None:
    """Set ``conv``'s bias (the model's last conv) to minus the median of its output in ``run()``: half the
    pixels fall below zero before the last ReLU, so a missing ReLU shows and the comparison keeps half the map."""
    seen = []
    handle = conv.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            conv.bias.zero_()
            run()
            conv.bias.fill_(-float(seen[0].median()))
    finally:
        handle.remove()


class TransferDepthAnything(Capstone):
    """Depth Anything V2-S's head from the learner's parts, against transformers (see the module docstring)."""

    name = "transfer_depth_anything"
    part_names = DA_PARTS

    def make_case(self, seed):
        from ...hf import from_hf

        plan, parts = self.part_plans(seed)
        g = generator(self.name, seed, 1)
        layers = [[torch.randn(B, 1 + nh * nw, DA_WIDTH, generator=g) for _ in range(12)] for nh, nw in GRIDS]
        model = hf_depth_anything(seed)
        hooked = [layers[0][h] for h in DA_HOOKS]
        centre_last_conv(model.head.conv3, lambda: model.head(model.neck(hooked, *GRIDS[0]), *GRIDS[0]))
        ref = from_hf(model)                                          # dptlearn's copy: the known mistakes
        state = {k.removeprefix("dpt."): v for k, v in ref.state_dict().items()}
        head = len(plan)
        plan += [{**build(what="MyDepthAnythingHead()", slot="head"), "of": ["head"]}, load(state, slot="head")]
        runs = []
        for (nh, nw), tokens in zip(GRIDS, layers):
            size = (DA_PATCH * nh, DA_PATCH * nw)
            with torch.no_grad():
                hooked = [tokens[h] for h in DA_HOOKS]
                want = model.head(model.neck(hooked, nh, nw), nh, nw)     # (B, H, W): transformers' predicted_depth
            plan.append(call(tokens, size, fn="head", what=f"your head(12 layers (2, 1 + {nh * nw}, 384), {size})"))
            runs.append((tokens, size, want))
        return Case(plan, {"parts": parts, "ref": ref, "head": head, "runs": runs})

    def mistakes(self, ref, tokens, size) -> list:
        def hooks(h):
            return lambda: ref([tokens[i] for i in h], size)

        def variant(**attrs):
            def run():
                m = copy.deepcopy(ref)
                for path, value in attrs.items():
                    obj = m.dpt if path == "odd_grid" else m.dpt.head
                    setattr(obj, path, value)
                return m([tokens[i] for i in DA_HOOKS], size)
            return run
        out = [(msg, hooks(h)) for h, msg in HOOK_SLIPS]
        out += [("on the odd grid you cropped the doubled coarsest path (DUSt3R's answer); Depth Anything's coarsest "
                 "block upsamples straight to the next level's size instead (lecture 09, the odd grid's three "
                 "answers)", variant(odd_grid="crop")),
                ("the head ends with a ReLU after its last conv (relative depth is never negative)",
                 variant(activation=None))]
        return out

    def verify(self, case, results):
        i = self.judge_parts(case, results)
        self.weights_loaded(case, results, i, i + 1, hint=lambda m, u, s: (
            "the check loads dptlearn's names: reassemble (your Reassemble at DA-V2-S's widths), fusion.0-3 (your "
            "FusionBlocks, fusion.3 without a skip unit) and head.reduce / head.refine / head.predict — check the "
            "widths against lecture 09's table"))
        for k, (tokens, size, want) in enumerate(case.data["runs"]):
            r = results[i + 2 + k]
            got = self.value(case, results, i + 2 + k, hint="Depth Anything's layers carry a CLS token first, "
                                                            "(B, 1 + N, C): drop it before the grid (readout 'ignore')")
            nh, nw = size[0] // DA_PATCH, size[1] // DA_PATCH
            self.compare(got, want, label=f"depth on the {nh}x{nw} grid", dims="(B, H, W)", result=r,
                         shape_hints={(B, 1, *size): "depth is (B, H, W): drop the channel axis",
                                      (B, 16 * nh, 16 * nw): "the head's upsample goes to the image size (x1.75 for "
                                                             "14-pixel patches), not x2"},
                         candidates=self.mistakes(case.data["ref"], tokens, size))
        return (f"your {len(DA_PARTS)} parts pass their checks; your head equals transformers' "
                f"DepthAnythingForDepthEstimation (DA-V2-S widths, random weights) on an odd and an even grid")


# ============================================================================ DPT-Large's readout `project` head

DL_HOOKS, DL_LAYERS, DL_PATCH = (5, 11, 17, 23), 24, 16
DL_CONFIG = (16, (4, 8, 16, 16), 8)          # MyDPTLargeHead(hidden_size, layer_dims, feature_dim): course-sized
DL_PARTS = ("patch_grid", "tokens_to_grid", "select_hooked_tokens", "ReadoutProject", "Reassemble",
            "ResidualConvUnit", "FusionBlock", "RegressionHead")
DL_HOOK_SLIPS = (((4, 10, 16, 22), "hooks one block early: DPT-Large taps every sixth of its 24 blocks, 0-based "
                                   "(lecture 09's table)"),
                 ((2, 5, 8, 11), "hooks [2, 5, 8, 11] are DPT-Base's (a 12-block ViT-B); DPT-Large has 24 blocks"),
                 ((0, 12, 18, 23), "hooks [0, 12, 18, 23] follow DUSt3R's rule; DPT-Large taps every sixth block"))


def hf_dpt_large(seed: int):
    """transformers' DPTForDepthEstimation with DPT-Large's layout (24 blocks, hooks [5, 11, 17, 23], readout
    'project') at the course-sized widths of DL_CONFIG, seeded weights (its ViT is never run)."""
    transformers = _transformers()
    width, dims, dim = DL_CONFIG
    cfg = transformers.DPTConfig(hidden_size=width, num_hidden_layers=DL_LAYERS, num_attention_heads=2,
                                 intermediate_size=8, image_size=2 * DL_PATCH, patch_size=DL_PATCH,
                                 backbone_out_indices=list(DL_HOOKS), readout_type="project",
                                 neck_hidden_sizes=list(dims), fusion_hidden_size=dim)
    return _random_neck_and_head(transformers.DPTForDepthEstimation, cfg, "transfer_dpt_large", seed)


class TransferDPTLarge(TransferDepthAnything):
    """DPT-Large's readout ``project`` head from the learner's parts, against transformers'
    ``DPTForDepthEstimation`` (random weights); built at a course-sized width, ``MyDPTLargeHead(*DL_CONFIG)``."""

    name = "transfer_dpt_large"
    notebook_of = {**PART_NOTEBOOK, "ReadoutProject": "01_tokens_and_hooks"}

    part_names = DL_PARTS

    def part_steps(self, name, sub):
        """ReadoutProject is not a capstone part: the learner hands it in as ``readout``."""
        steps = super().part_steps(name, sub)
        return [{**st, "of": ["readout"]} for st in steps] if name == "ReadoutProject" else steps

    def make_case(self, seed):
        from ...hf import from_hf

        plan, parts = self.part_plans(seed)
        g = generator(self.name, seed, 1)
        width = DL_CONFIG[0]
        layers = [[torch.randn(B, 1 + nh * nw, width, generator=g) for _ in range(DL_LAYERS)] for nh, nw in GRIDS]
        model = hf_dpt_large(seed)
        hooked = [layers[0][h] for h in DL_HOOKS]
        centre_last_conv(model.head.head[4], lambda: model.head(model.neck(hooked, *GRIDS[0])))
        ref = from_hf(model)
        state = {k.removeprefix("dpt."): v for k, v in ref.state_dict().items()}
        head = len(plan)
        plan += [{**build(*DL_CONFIG, what=f"MyDPTLargeHead{DL_CONFIG}", slot="head"), "of": ["head"]},
                 load(state, slot="head")]
        runs = []
        for (nh, nw), tokens in zip(GRIDS, layers):
            size = (DL_PATCH * nh, DL_PATCH * nw)
            with torch.no_grad():
                want = model.head(model.neck([tokens[h] for h in DL_HOOKS], nh, nw))   # (B, H', W')
            plan.append(call(tokens, size, fn="head", what=f"your head(24 layers (2, 1 + {nh * nw}, {width}), {size})"))
            runs.append((tokens, size, want))
        return Case(plan, {"parts": parts, "ref": ref, "head": head, "runs": runs})

    def mistakes(self, ref, tokens, size) -> list:
        def hooks(h):
            return lambda: ref([tokens[i] for i in h], size)

        def variant(change):
            def run():
                m = copy.deepcopy(ref)
                change(m.dpt)
                return m([tokens[i] for i in DL_HOOKS], size)
            return run

        def readout_first(dpt):
            with torch.no_grad():
                for r in dpt.readout:
                    w = r.project[0].weight
                    c = w.shape[1] // 2
                    w.copy_(torch.cat([w[:, c:], w[:, :c]], dim=1))

        def aligned_resize(dpt):   # the skip resized with corners pinned, as DUSt3R upsamples everywhere
            def merge(block, x, skip=None):
                if skip is not None and skip.shape[-2:] != x.shape[-2:]:
                    skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=True)  # (B, D, h, w)
                return block.unit(x if skip is None else x + block.skip_unit(skip))           # (B, D, h, w)
            for block in dpt.fusion:
                block.merge = types.MethodType(merge, block)

        out = [(msg, hooks(h)) for h, msg in DL_HOOK_SLIPS]
        out += [("the skip's resize uses align_corners=True: DUSt3R pins the corners everywhere, but transformers' "
                 "DPT resizes a finer level to the doubled path with align_corners=False (lecture 09, the odd grid's "
                 "three answers)", variant(aligned_resize)),
                ("readout concatenation order: DPT joins [patch token, CLS token] along the channels, patch "
                 "features first (lecture 01, section 5)", variant(readout_first)),
                ("the head ends with a ReLU after its last conv (relative inverse depth is never negative)",
                 variant(lambda dpt: setattr(dpt.head, "activation", None)))]
        return out

    def verify(self, case, results):
        i = self.judge_parts(case, results)
        self.weights_loaded(case, results, i, i + 1, hint=lambda m, u, s: (
            "readout 'project': each hooked layer has a ReadoutProject of its own (readout.0-3, your 01 answer)"
            if any(k.startswith("readout.") for k in m) else
            "the check loads dptlearn's names: readout.0-3 (your ReadoutProjects), reassemble, fusion.0-3 (fusion.3 "
            "without a skip unit) and head (your RegressionHead with last_dim 32)"))
        for k, (tokens, size, want) in enumerate(case.data["runs"]):
            got = self.value(case, results, i + 2 + k)
            nh, nw = size[0] // DL_PATCH, size[1] // DL_PATCH
            self.compare(got, want, label=f"depth on the {nh}x{nw} grid", dims="(B, H', W')", result=results[i + 2 + k],
                         shape_hints={(B, *size): "on an odd grid transformers' DPT does not crop: it resizes the finer "
                                                  "level to the doubled path, so the map grows (lecture 09, the odd "
                                                  "grid's three answers)",
                                      (B, 1, *want.shape[-2:]): "depth is (B, H', W'): drop the channel axis"},
                         candidates=self.mistakes(case.data["ref"], tokens, size))
        return (f"your {len(DL_PARTS)} parts pass their checks; your head equals transformers' DPTForDepthEstimation "
                f"(DPT-Large's layout, readout 'project', random weights) on an odd and an even grid")
