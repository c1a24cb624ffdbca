"""Checks that teach: one function per exercise, called from the exercise notebooks.

Each check takes the student's function, class or object, builds the matching reference from
``dptlearn`` with seeded random weights, loads the *same* weights into the student's version
(by the parameter names the exercise prescribes), runs both on the same seeded inputs and
compares. When they differ it does not stop at "wrong": it re-runs the known mistakes on the
same inputs and names the one the student made (``align_corners`` wrong, a reshape where a
rearrange was needed, a missing pre-activation, a bias DUSt3R does not have, ``exp`` instead of
``expm1``...). Shapes are checked first, with the expected shape spelled out.

Contract (see ``docs/grading.md``):

* ``checks.<name>(student_obj, device=None)`` raises ``AssertionError`` with a message that
  starts with ``<name>:`` when the student's code is wrong or raises; otherwise it prints one
  line ``✓ <name>: passed (<what was checked>)`` and returns None.
* Everything runs on ``dptlearn.get_device(device)``, in float32 with TF32 off, under
  ``torch.no_grad()``; the global random state is left untouched.
* Handing in dptlearn's own reference (or a subclass of it) fails: "implement it yourself".

Every check is fast (well under a second on a CPU): small widths, small odd grids.
"""
from __future__ import annotations

import inspect
import math
import re
from contextlib import contextmanager
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ... import dust3r as _dust3r
from ... import fusion as _fusion
from ... import grid as _grid
from ... import head as _head
from ... import postprocess as _post
from ... import reassemble as _reassemble
from ... import tokens as _tokens
from ...device import get_device

__all__ = [
    "hook_indices", "select_hooked_tokens", "apply_readout", "ReadoutProject",
    "patch_grid", "tokens_to_grid", "grid_to_tokens",
    "reassemble_branch", "Reassemble",
    "residual_conv_unit", "ResidualConvUnit",
    "crop_to", "FusionBlock", "fuse_pyramid",
    "RegressionHead", "head_sequential",
    "depth_activation", "conf_activation", "postprocess",
    "dust3r_forward", "convert_dust3r_state_dict",
]

INF = math.inf
RTOL, ATOL = 1e-3, 1e-5   # relative to the largest reference value; float32 round-off is ~1e-6


# ============================================================================ helpers

def _fail(name: str, message: str):
    raise AssertionError(f"{name}: {message}")


def _passed(name: str, what: str) -> None:
    print(f"✓ {name}: passed ({what})")


@contextmanager
def _sandbox():
    """Seeded, float32-exact and gradient-free; restores the global RNG and TF32 flags."""
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def _randn(*shape, seed: int, device, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(device)


def _randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter with seeded values: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.5^2).

    Larger-than-default biases make a missing or extra bias show up clearly.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in sorted(module.named_parameters()):
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def _reference_names(refs) -> str:
    return " / ".join(f"dptlearn.{r.__module__.split('.', 1)[-1]}.{r.__qualname__}" for r in refs)


def _reject_reference(name: str, obj, *refs) -> None:
    """Fail if ``obj`` is one of dptlearn's references, a subclass or an instance of one."""
    for ref in refs:
        hit = obj is ref
        if inspect.isclass(ref):
            hit = hit or (inspect.isclass(obj) and issubclass(obj, ref)) or isinstance(obj, ref)
            if isinstance(obj, nn.Module):
                hit = hit or any(isinstance(m, ref) for m in obj.modules())
        if hit:
            _fail(name, f"this is dptlearn's own {_reference_names([ref])} (or built on it) — implement it "
                        f"yourself: the check compares your code against that reference")


_EXC_HINTS = (
    ("view size is not compatible", "`.view()` needs contiguous memory: after a permute/transpose use "
                                    "`.reshape()` or `einops.rearrange`"),
    ("Kernel size can't be greater than actual input size", "the 3x3 convs need padding=1 to keep the map size"),
    ("stack expects each tensor to be equal size", "the hooked layers have different widths (the encoder output "
                                                   "is wider than the decoder's), so they cannot be stacked: "
                                                   "return a list"),
    ("Expected all tensors to be on the same device", "create new tensors on the input's device "
                                                     "(e.g. `torch.zeros_like(x)`, `device=x.device`)"),
)


def _run(name: str, fn: Callable, *args, what: str = "your code", hint: str | None = None, **kwargs):
    """Call student code; turn its exceptions into an AssertionError that says where (and ``hint``)."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        _fail(name, f"not implemented yet — {what} raised NotImplementedError"
                    + (f" ({e})" if str(e) else "") + ": replace the stub with your code")
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001 - anything the student's code raises
        hint = hint or next((h for pat, h in _EXC_HINTS if pat in str(e)), None)
        raise AssertionError(f"{name}: {what} raised {type(e).__name__}: {e}"
                             + (f" — hint: {hint}" if hint else "")) from e


def _expect_value_error(name: str, call: Callable[[], object], what: str, why: str,
                        returned: Callable[[object], str] = repr, tail: str = "") -> None:
    """Fail unless ``call()`` raises ValueError; ``what`` names the call, ``why`` the rule it must enforce."""
    try:
        got = call()
    except ValueError:
        return
    except NotImplementedError as e:
        _fail(name, f"not implemented yet — your code raised NotImplementedError ({e}): replace the stub "
                    f"with your code")
    except Exception as e:  # noqa: BLE001 - anything the student's code raises
        _fail(name, f"{what} should raise ValueError ({why}), got {type(e).__name__}: {e}")
    _fail(name, f"{what} should raise ValueError ({why}), but you returned {returned(got)}{tail}")


def _shape(t) -> tuple:
    return tuple(t.shape)


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    if got.shape != want.shape:
        return False
    got, want = got.float(), want.float().to(got.device)
    if torch.isnan(got).any() or torch.isnan(want).any():
        return bool(torch.equal(torch.isnan(got), torch.isnan(want))) and _close(
            torch.nan_to_num(got), torch.nan_to_num(want))
    scale = want.abs().max().item() if want.numel() else 0.0
    return (got - want).abs().max().item() <= ATOL + RTOL * scale if got.numel() else True


def _as_tensor(name: str, got, label: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        _fail(name, f"{label} should be a torch.Tensor, got {type(got).__name__}")
    return got


def _compare(name: str, got, want: torch.Tensor, *, label: str, dims: str,
             shape_hints: Mapping[tuple, str] | None = None,
             candidates: Iterable[tuple[str, Callable[[], torch.Tensor]]] = ()) -> None:
    """Shape first (``dims`` spells the axes, e.g. ``(B, C, nh, nw)``), then values.

    ``candidates`` are (diagnosis, thunk) pairs: known mistakes re-run on the same inputs; the
    first whose output matches the student's names the mistake.
    """
    got = _as_tensor(name, got, label)
    if got.device != want.device:
        _fail(name, f"{label} is on {got.device}, expected {want.device} (the input's device)")
    if got.shape != want.shape:
        hint = (shape_hints or {}).get(_shape(got))
        _fail(name, f"{label}: expected {dims} = {_shape(want)}, got {_shape(got)}" + (f" — {hint}" if hint else ""))
    if not got.is_floating_point():
        _fail(name, f"{label} should be a float tensor like its input, got dtype {got.dtype}")
    if _close(got, want):
        return
    for diagnosis, thunk in candidates:
        try:
            cand = thunk()
        except Exception:  # noqa: BLE001 - a mistake that cannot even run on these inputs
            continue
        if isinstance(cand, torch.Tensor) and _close(got, cand):
            _fail(name, f"{label}: {diagnosis}")
    if torch.isnan(got).any() and not torch.isnan(want).any():
        _fail(name, f"{label} contains NaN where the reference has none")
    diff = (got.float() - want.float()).abs()
    idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    _fail(name, f"{label} has the right shape {dims} = {_shape(want)} but the wrong values: max |diff| = "
                f"{diff.max().item():.3g} at index {idx} (reference value {want[idx].item():.4g}, "
                f"yours {got[idx].item():.4g})")


def _module(name: str, cls_or_factory, *args, what: str) -> nn.Module:
    mod = _run(name, cls_or_factory, *args, what=what)
    if not isinstance(mod, nn.Module):
        _fail(name, f"{what} should give a torch.nn.Module, got {type(mod).__name__} (subclass nn.Module "
                    f"and call super().__init__() first)")
    return mod


def _load(name: str, student: nn.Module, ref_state: Mapping[str, torch.Tensor], *,
          no_bias_note: str = "DUSt3R builds these convs with bias=False",
          bias_note: str = "DUSt3R's convs here have a bias (nn.Conv2d's default bias=True)",
          hint: Callable[[list, list, list], str | None] | None = None) -> None:
    """Load the reference's weights into the student's module under the prescribed names."""
    got = student.state_dict()
    missing = [k for k in ref_state if k not in got]
    unexpected = [k for k in got if k not in ref_state]
    mismatched = [(k, list(ref_state[k].shape), list(got[k].shape)) for k in ref_state
                  if k in got and got[k].shape != ref_state[k].shape]
    if missing or unexpected or mismatched:
        extra_bias = [k for k in unexpected if k.endswith(".bias") and k[:-5] + ".weight" in ref_state]
        missing_bias = [k for k in missing if k.endswith(".bias") and k[:-5] + ".weight" in got]
        if extra_bias and not missing and not mismatched and len(extra_bias) == len(unexpected):
            _fail(name, f"bias where DUSt3R has none: {extra_bias} — {no_bias_note}")
        if missing_bias and not unexpected and not mismatched and len(missing_bias) == len(missing):
            _fail(name, f"missing bias: {missing_bias} — {bias_note}")
        specific = hint(missing, unexpected, mismatched) if hint else None
        parts = []
        if missing:
            parts.append(f"missing parameters {missing}")
        if unexpected:
            parts.append(f"unexpected parameters {unexpected}")
        for k, want, have in mismatched:
            parts.append(f"{k}: expected shape {want}, got {have}")
        table = f" (expected { {k: list(v.shape) for k, v in ref_state.items()} })" if len(ref_state) <= 8 else ""
        _fail(name, (f"{specific} — " if specific else "") + "your module's parameters do not match the "
                    f"names and shapes the exercise prescribes{table}: " + "; ".join(parts))
    try:
        student.load_state_dict({k: v.detach().clone() for k, v in ref_state.items()})
    except Exception as e:  # noqa: BLE001
        _fail(name, f"loading the reference weights into your module failed: {type(e).__name__}: {e}")


def _prepare(student: nn.Module, device) -> nn.Module:
    return student.to(device).eval()


def _up(x: torch.Tensor, align_corners: bool = True, mode: str = "bilinear", size=None) -> torch.Tensor:
    kw = {} if mode == "nearest" else {"align_corners": align_corners}
    if size is not None:
        return F.interpolate(x, size=tuple(size), mode=mode, **kw)
    return F.interpolate(x, scale_factor=2, mode=mode, **kw)


ALIGN_MSG = ("align_corners is False: DUSt3R upsamples with align_corners=True "
             "(F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True))")
NEAREST_MSG = "nearest-neighbour upsampling: DUSt3R upsamples bilinearly with align_corners=True"


# ============================================================================ 01 tokens and hooks

def hook_indices(student: Callable[[int], Sequence[int]], device=None) -> None:
    """``student(dec_depth) -> [0, 2L//4, 3L//4, L]``, ValueError for dec_depth <= 9."""
    name = "hook_indices"
    _reject_reference(name, student, _tokens.dust3r_hook_indices)
    for L in (12, 24, 10, 13, 14):
        got = _run(name, student, L, what=f"hook_indices({L})")
        if isinstance(got, torch.Tensor) or not isinstance(got, (list, tuple)):
            _fail(name, f"hook_indices({L}) should return a list of 4 ints, got {type(got).__name__}")
        if any(isinstance(h, float) for h in got):
            _fail(name, f"hook_indices({L}) returned floats {list(got)}: use integer division // so the hooks "
                        f"can index the token list")
        got = [int(h) for h in got]
        want = _tokens.dust3r_hook_indices(L)
        if got == want:
            continue
        known = [
            ([0, 4, 6, 8], "[0, 4, 6, 8] are the hooks of CroCo's default 8-block decoder (which DUSt3R rejects); "
                           "compute them from dec_depth: [0, 2L//4, 3L//4, L]"),
            ([2, 5, 8, 11], "[2, 5, 8, 11] are the original DPT's hooks on a 12-block ViT-B; DUSt3R's are "
                            "[0, 2L//4, 3L//4, L] over [encoder_out, dec_1, ..., dec_L]"),
            ([0, 2 * L // 4, 3 * L // 4, L - 1], "off by one: the head gets [encoder_out, dec_1, ..., dec_L] "
                                                "(L + 1 entries), so the last decoder block is index L, not L - 1"),
            ([0, 2 * L // 4 - 1, 3 * L // 4 - 1, L - 1], "off by one: index 0 is the encoder output, so decoder "
                                                        "block k sits at index k — do not subtract 1"),
            ([L // 4, 2 * L // 4, 3 * L // 4, L], "the first hook is index 0 (the encoder's output), not L//4"),
            ([0, 2 * (L // 4), 3 * (L // 4), L], "rounding: compute 2L//4 and 3L//4 (multiply first, then "
                                                "floor-divide); 2*(L//4) differs when L is not a multiple of 4"),
        ]
        diag = next((msg for k, msg in known if got == k), None)
        _fail(name, f"dec_depth={L}: expected {want}, got {got}" + (f" — {diag}" if diag else ""))
    for L in (9, 8):
        _expect_value_error(name, lambda: student(L), f"dec_depth={L}",
                            "DUSt3R's DPT head requires dec_depth > 9")
    _passed(name, "dec_depth 10, 12, 13, 14, 24; ValueError for 8 and 9")


def select_hooked_tokens(student: Callable, device=None) -> None:
    """``student(tokens, hooks) -> [tokens[h] for h in hooks]``; ValueError when the list is too short."""
    name = "select_hooked_tokens"
    _reject_reference(name, student, _tokens.select_hooked_tokens)
    dev = get_device(device)
    with _sandbox():
        L, hooks = 10, [0, 5, 7, 10]
        tokens = [_randn(2, 6, 8 if i == 0 else 6, seed=100 + i, device=dev) for i in range(L + 1)]
        for container in (list, tuple):
            got = _run(name, student, container(tokens), list(hooks),
                       what=f"select_hooked_tokens(<{container.__name__} of {L + 1} tensors>, {hooks})")
            if isinstance(got, torch.Tensor):
                _fail(name, f"return a list of 4 tensors, not one tensor {_shape(got)}: the encoder output "
                            f"(C=8) is wider than the decoder's (C=6), so the hooked layers cannot be stacked")
            if not isinstance(got, (list, tuple)) or len(got) != len(hooks):
                _fail(name, f"expected a list of {len(hooks)} tensors (one per hook), got "
                            f"{type(got).__name__}{'' if not hasattr(got, '__len__') else ' of length %d' % len(got)}")
            for i, (h, t) in enumerate(zip(hooks, got)):
                t = _as_tensor(name, t, f"item {i}")
                if t.shape == tokens[h].shape and torch.equal(t, tokens[h]):
                    continue
                same = [j for j, s in enumerate(tokens) if s.shape == t.shape and torch.equal(s, t)]
                if same and same[0] == h - 1:
                    _fail(name, f"item {i} is tokens[{h - 1}], expected tokens[{h}] — off by one: index 0 of the "
                                f"list is the encoder output, so hook h is simply tokens[h]")
                if same:
                    _fail(name, f"item {i} is tokens[{same[0]}], expected tokens[{h}] (hooks {hooks}, in order)")
                _fail(name, f"item {i} should be tokens[{h}] unchanged, (B, N, C) = {_shape(tokens[h])}; got a "
                            f"tensor of shape {_shape(t)} that equals none of the layers")
        _expect_value_error(name, lambda: student(tokens[:9], hooks), f"a 9-layer list with hooks {hooks}",
                            f"saying the hooks need {max(hooks) + 1} layers", returned=lambda g: type(g).__name__)
    _passed(name, "hooks [0, 5, 7, 10] over 11 layers, list or tuple input; ValueError when too short")


def apply_readout(student: Callable, device=None) -> None:
    """``student(x, mode, n_prefix)`` for modes 'ignore' and 'add': (B, n_prefix + N, C) -> (B, N, C)."""
    name = "apply_readout"
    dev = get_device(device)
    with _sandbox():
        B, N, C = 2, 6, 5
        for n_prefix in (1, 2):
            x = _randn(B, n_prefix + N, C, seed=200 + n_prefix, device=dev)
            x_before = x.clone()
            for mode in ("ignore", "add"):
                want = _tokens.Readout(mode, C, n_prefix).to(dev)(x)
                got = _run(name, student, x, mode, n_prefix, what=f"apply_readout(x, {mode!r}, n_prefix={n_prefix})")
                if not torch.equal(x, x_before):
                    _fail(name, "you modified the input x in place; return a new tensor")
                pre, pat = x[:, :n_prefix], x[:, n_prefix:]
                _compare(name, got, want, label=f"mode {mode!r}, n_prefix={n_prefix}", dims="(B, N, C)",
                         shape_hints={(B, N + n_prefix, C): "the prefix tokens are still there: drop x[:, :n_prefix]",
                                      (B, N - n_prefix, C): "you dropped too many tokens"},
                         candidates=[
                             ("you dropped the last n_prefix tokens; the prefix (CLS/register) tokens come first: "
                              "x[:, n_prefix:]", lambda: x[:, :-n_prefix] + (pre.mean(1, keepdim=True) if mode == "add" else 0)),
                             ("you dropped the last n_prefix tokens; the prefix (CLS/register) tokens come first: "
                              "x[:, n_prefix:]", lambda: x[:, :-n_prefix]),
                             ("mode 'add' must add the readout (mean of the prefix tokens) to every patch token; "
                              "you only dropped them", lambda: pat),
                             ("you summed the prefix tokens; the readout is their mean",
                              lambda: pat + pre.sum(1, keepdim=True)),
                             ("you used only the first prefix token; average all n_prefix of them (e.g. CLS + "
                              "register tokens)", lambda: pat + pre[:, :1]),
                             ("mode 'ignore' drops the prefix tokens and adds nothing", lambda: pat + pre.mean(1, keepdim=True)),
                         ])
    _passed(name, "modes 'ignore' and 'add' with 1 and 2 prefix tokens")


def _readout_project_ref(x, lin_w, lin_b, order="patches_first", act=True, n_prefix=1, readout_index=0):
    pat = x[:, n_prefix:]
    ro = x[:, readout_index:readout_index + 1].expand_as(pat)
    cat = torch.cat([pat, ro] if order == "patches_first" else [ro, pat], dim=-1)
    y = F.linear(cat, lin_w, lin_b)
    return F.gelu(y) if act is True else (F.relu(y) if act == "relu" else y)


def ReadoutProject(student_cls, device=None) -> None:  # noqa: N802 - named after the class it checks
    """``student_cls(dim)`` with ``project = nn.Sequential(nn.Linear(2*dim, dim), nn.GELU())``."""
    name = "ReadoutProject"
    _reject_reference(name, student_cls, _tokens.Readout)
    dev = get_device(device)
    with _sandbox():
        B, N, C = 2, 6, 5
        ref = _randomize_(_tokens.Readout("project", C, 1), 210).to(dev).eval()
        stu = _module(name, student_cls, C, what=f"ReadoutProject({C})")
        _reject_reference(name, stu, _tokens.Readout)
        _load(name, stu, ref.state_dict(), bias_note="nn.Linear has a bias by default",
              hint=lambda m, u, s: "the attribute must be `project = nn.Sequential(nn.Linear(2 * dim, dim), "
                                   "nn.GELU())` (keys project.0.weight, project.0.bias)")
        stu = _prepare(stu, dev)
        x = _randn(B, 1 + N, C, seed=211, device=dev)
        want = ref(x)
        got = _run(name, stu, x, what="your forward")
        w, b = ref.project[0].weight, ref.project[0].bias
        _compare(name, got, want, label="output", dims="(B, N, C)",
                 shape_hints={(B, N + 1, C): "the readout token is still there: the output has only the N patch tokens",
                              (B, N, 2 * C): "apply the Linear(2C -> C) projection after concatenating"},
                 candidates=[
                     ("concatenation order: [patch tokens, readout token] along the channels (patch features first)",
                      lambda: _readout_project_ref(x, w, b, order="readout_first")),
                     ("missing GELU after the Linear layer", lambda: _readout_project_ref(x, w, b, act=False)),
                     ("ReLU where DPT uses GELU", lambda: _readout_project_ref(x, w, b, act="relu")),
                     ("you used the last token as the readout; the readout (CLS) token is the first one, x[:, 0]",
                      lambda: _readout_project_ref(x, w, b, readout_index=N)),
                 ])
    _passed(name, "Linear(2C -> C) + GELU on [patches, readout], weights loaded into project.0")


# ============================================================================ 02 rearrange

def patch_grid(student: Callable, device=None) -> None:
    """``student((H, W), patch_size) -> (nh, nw)``; ValueError when H or W is not a multiple."""
    name = "patch_grid"
    _reject_reference(name, student, _grid.patch_grid)
    for size, p in (((336, 512), 16), ((384, 512), 16), ((224, 224), 16), ((518, 392), 14)):
        got = _run(name, student, size, p, what=f"patch_grid({size}, {p})")
        want = _grid.patch_grid(size, p)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            _fail(name, f"patch_grid({size}, {p}) should return a pair (nh, nw), got {got!r}")
        if any(isinstance(v, float) for v in got):
            _fail(name, f"patch_grid({size}, {p}) returned {tuple(got)}: use integer division // (a grid has an "
                        f"integer number of rows and columns)")
        got = tuple(int(v) for v in got)
        if got == want:
            continue
        if got == want[::-1]:
            _fail(name, f"patch_grid({size}, {p}): expected (nh, nw) = {want}, got {got} — nh and nw swapped: "
                        f"image_size is (H, W) (rows first), so nh = H // p and nw = W // p")
        _fail(name, f"patch_grid({size}, {p}): expected (nh, nw) = {want}, got {got}")
    for size, p in (((500, 512), 16), ((384, 500), 16)):
        _expect_value_error(name, lambda: student(size, p), f"patch_grid({size}, {p})",
                            f"{size[0] if size[0] % p else size[1]} is not a multiple of {p}",
                            tail=": rounding down silently would give an output smaller than the image")
    _passed(name, "(336, 512), (384, 512), (224, 224) with p=16, (518, 392) with p=14; ValueError for non-multiples")


def tokens_to_grid(student: Callable, device=None) -> None:
    """``student(tokens, nh, nw)``: (B, N, C) -> (B, C, nh, nw), row-major."""
    name = "tokens_to_grid"
    _reject_reference(name, student, _grid.tokens_to_grid)
    dev = get_device(device)
    with _sandbox():
        B, C = 2, 4
        for nh, nw in ((3, 5), (4, 2), (1, 6)):
            t = _randn(B, nh * nw, C, seed=300 + nh, device=dev)
            want = _grid.tokens_to_grid(t, nh, nw)
            got = _run(name, student, t, nh, nw, what=f"tokens_to_grid(tokens {(B, nh * nw, C)}, nh={nh}, nw={nw})")
            _compare(name, got, want, label=f"grid for nh={nh}, nw={nw}", dims="(B, C, nh, nw)",
                     shape_hints={(B, C, nw, nh): "nh and nw swapped: the grid is (B, C, nh, nw) = rows, then columns",
                                  (B, nh, nw, C): "channels last: move C to dim 1 — (B, C, nh, nw)",
                                  (B, nw, nh, C): "channels last and nh/nw swapped: (B, C, nh, nw)"},
                     candidates=[
                         ("reshape instead of rearrange: tokens.reshape(B, C, nh, nw) reinterprets the memory of a "
                          "(B, N, C) tensor and mixes channels with positions; move the channel axis first "
                          "(rearrange(tokens, 'b (nh nw) c -> b c nh nw', nh=nh, nw=nw))",
                          lambda: t.reshape(B, C, nh, nw)),
                         ("swapped nh/nw in the pattern: tokens are row-major (row index slow, column fast), so "
                          "the pattern is 'b (nh nw) c', not 'b (nw nh) c'",
                          lambda: rearrange(t, "b (nw nh) c -> b c nh nw", nh=nh, nw=nw)),
                     ])
    _passed(name, "3x5, 4x2 and 1x6 grids, B=2, C=4; row-major order")


def grid_to_tokens(student: Callable, device=None) -> None:
    """``student(grid)``: (B, C, nh, nw) -> (B, nh * nw, C), the inverse of tokens_to_grid."""
    name = "grid_to_tokens"
    _reject_reference(name, student, _grid.grid_to_tokens)
    dev = get_device(device)
    with _sandbox():
        B, C = 2, 4
        for nh, nw in ((3, 5), (4, 2)):
            g = _randn(B, C, nh, nw, seed=310 + nh, device=dev)
            want = _grid.grid_to_tokens(g)
            got = _run(name, student, g, what=f"grid_to_tokens(grid {(B, C, nh, nw)})")
            N = nh * nw
            _compare(name, got, want, label=f"tokens for a {nh}x{nw} grid", dims="(B, N, C)",
                     shape_hints={(B, C, N): "got (B, C, N): the channel axis must come last — (B, N, C)",
                                  (B, C, nh, nw): "still a grid: flatten the two spatial axes into N"},
                     candidates=[
                         ("reshape instead of rearrange: grid.reshape(B, N, C) reinterprets the (B, C, nh, nw) memory "
                          "and mixes channels with positions; use rearrange(grid, 'b c nh nw -> b (nh nw) c')",
                          lambda: g.reshape(B, N, C)),
                         ("swapped nh/nw: flatten row-major, '(nh nw)', so token k is at row k // nw, column k % nw",
                          lambda: rearrange(g, "b c nh nw -> b (nw nh) c")),
                     ])
        t = _randn(B, 15, C, seed=320, device=dev)
        back = _run(name, student, _grid.tokens_to_grid(t, 3, 5), what="grid_to_tokens(tokens_to_grid(t, 3, 5))")
        if not (isinstance(back, torch.Tensor) and back.shape == t.shape and torch.equal(back, t)):
            _fail(name, "grid_to_tokens(tokens_to_grid(t, 3, 5)) should give t back exactly")
    _passed(name, "3x5 and 4x2 grids, B=2, C=4; round trip with tokens_to_grid")


# ============================================================================ 03 reassemble

def _resampler_hint(factor):
    return {4: "ConvTranspose2d(out_dim, out_dim, kernel_size=4, stride=4)",
            2: "ConvTranspose2d(out_dim, out_dim, kernel_size=2, stride=2)",
            1: "no resampler at all",
            0.5: "Conv2d(out_dim, out_dim, kernel_size=3, stride=2, padding=1)"}[factor]


def _branch_shape_hints(B, D, nh, nw, factor) -> dict:
    hints = {}
    for k in (4, 2, 1, 0.5, 8, 0.25):
        if k == factor:
            continue
        size = (math.ceil(nh * k), math.ceil(nw * k))
        hints.setdefault((B, D) + size, f"wrong resampling factor: this branch must resample x{factor} "
                                         f"({_resampler_hint(factor)}), yours resampled x{k}")
    if factor == 0.5:
        hints[(B, D, nh // 2, nw // 2)] = ("the x1/2 branch must round up on odd grids (3 rows -> 2, as DUSt3R's "
                                           "512x336 gives 21 -> 11): Conv2d(kernel_size=3, stride=2, padding=1); "
                                           "kernel 2 / stride 2, or no padding, rounds down")
    return hints


def reassemble_branch(student: Callable, device=None) -> None:
    """``student(in_dim, out_dim, factor) -> nn.Module`` with ``[0]`` 1x1 conv and ``[1]`` the resampler."""
    name = "reassemble_branch"
    _reject_reference(name, student, _reassemble.ReassembleBranch)
    dev = get_device(device)
    with _sandbox():
        B, cin, cout, nh, nw = 2, 6, 4, 3, 5
        x = _randn(B, cin, nh, nw, seed=400, device=dev)
        for i, factor in enumerate(_reassemble.REASSEMBLE_FACTORS):
            ref = _randomize_(_reassemble.ReassembleBranch(cin, cout, factor), 401 + i).to(dev).eval()
            stu = _module(name, student, cin, cout, factor, what=f"reassemble_branch({cin}, {cout}, {factor})")
            _reject_reference(name, stu, _reassemble.ReassembleBranch)

            def hint(missing, unexpected, mismatched, factor=factor):
                if "0.weight" in dict((k, 0) for k, *_ in mismatched):
                    return ("index 0 is the 1x1 projection Conv2d(in_dim, out_dim, kernel_size=1); the resampler "
                            "comes second, at index 1, on out_dim channels")
                if factor != 1 and "1.weight" in missing:
                    return (f"no learned resampler at index 1: DPT resamples x{factor} with "
                            f"{_resampler_hint(factor)} (F.interpolate has no weights)")
                if factor == 1 and any(k.startswith("1.") for k in unexpected):
                    return "factor 1 has no resampler: the branch is just the 1x1 projection"
                if any(k == "1.weight" for k, *_ in mismatched):
                    why = (" (the x1/2 branch must round up on odd grids, 3 rows -> 2: kernel 3 with padding 1; "
                           "kernel 2 / stride 2 rounds down)" if factor == 0.5 else "")
                    return f"wrong resampler for factor {factor}: use {_resampler_hint(factor)}{why}"
                return None
            _load(name, stu, ref.state_dict(), hint=hint,
                  bias_note="DUSt3R's act_postprocess convs all have a bias (nn.Conv2d's default)")
            stu = _prepare(stu, dev)
            got = _run(name, stu, x, what=f"the factor-{factor} branch's forward")
            want = ref(x)
            _compare(name, got, want, label=f"factor {factor} on a {nh}x{nw} grid", dims="(B, out_dim, h, w)",
                     shape_hints=_branch_shape_hints(B, cout, nh, nw, factor))
    _passed(name, "factors 4, 2, 1, 1/2 on an odd 3x5 grid, weights loaded as [0] and [1]")


class _RefReassemble(nn.Module):
    def __init__(self, dim_tokens, layer_dims, feature_dim):
        super().__init__()
        self.branches = nn.ModuleList(_reassemble.ReassembleBranch(c, d, f) for c, d, f in
                                      zip(dim_tokens, layer_dims, _reassemble.REASSEMBLE_FACTORS))
        self.project = nn.ModuleList(nn.Conv2d(d, feature_dim, 3, padding=1, bias=False) for d in layer_dims)

    def forward(self, grids):
        return [p(b(g)) for p, b, g in zip(self.project, self.branches, grids)]


def Reassemble(student_cls, device=None) -> None:  # noqa: N802
    """``student_cls(dim_tokens, layer_dims, feature_dim)``: ``branches`` + ``project``; forward(grids) -> 4 maps."""
    name = "Reassemble"
    dev = get_device(device)
    with _sandbox():
        dims, layer_dims, D, B, nh, nw = (8, 6, 6, 6), (3, 4, 5, 6), 7, 2, 3, 5
        ref = _randomize_(_RefReassemble(dims, layer_dims, D), 410).to(dev).eval()
        stu = _module(name, student_cls, dims, layer_dims, D,
                      what=f"Reassemble({dims}, {layer_dims}, {D})")

        def hint(missing, unexpected, mismatched):
            keys = [k for k, *_ in mismatched]
            if any(k.startswith("branches.") for k in keys):
                return ("the branches resample by (4, 2, 1, 1/2) in this order: branch 0 (the encoder output) is "
                        "the finest, x4; branch 3 the coarsest, x1/2")
            if any(k.startswith("project.") for k in keys):
                return "project[i] is a 3x3 conv layer_dims[i] -> feature_dim (padding=1, bias=False)"
            return None
        _load(name, stu, ref.state_dict(), hint=hint,
              no_bias_note="the 3x3 projections (DUSt3R's scratch.layer_rn) are built with bias=False")
        stu = _prepare(stu, dev)
        grids = [_randn(B, c, nh, nw, seed=411 + i, device=dev) for i, c in enumerate(dims)]
        got = _run(name, stu, grids, what="your forward(grids)")
        want = ref(grids)
        if isinstance(got, torch.Tensor) or not isinstance(got, (list, tuple)) or len(got) != 4:
            _fail(name, f"forward should return a list of 4 feature maps (fine to coarse), got {type(got).__name__}")
        for i, (g, w, f) in enumerate(zip(got, want, _reassemble.REASSEMBLE_FACTORS)):
            hints = {k: v for k, v in _branch_shape_hints(B, D, nh, nw, f).items()}
            hints[(B, layer_dims[i]) + _shape(w)[2:]] = "apply project[i] (3x3 conv to feature_dim) after the branch"
            _compare(name, g, w, label=f"level {i} (factor {f})", dims="(B, feature_dim, h_i, w_i)",
                     shape_hints=hints)
    _passed(name, "4 branches x4, x2, x1, x1/2 + 3x3 projections without bias on an odd 3x5 grid")


# ============================================================================ 04 RefineNet fusion

def _rcu(x, w1, b1, w2, b2, pre=True, residual=True, skip_is_relu=False, final_relu=False):
    inp = F.relu(x) if pre else x
    out = F.conv2d(inp, w1, b1, padding=1)
    out = F.conv2d(F.relu(out), w2, b2, padding=1)
    if residual:
        out = (F.relu(x) if skip_is_relu else x) + out
    return F.relu(out) if final_relu else out


def _rcu_candidates(run: Callable[..., torch.Tensor]):
    """Known RCU mistakes; ``run(**variant)`` recomputes the reference output with one of them."""
    return [
        ("missing pre-activation: the unit is x + conv2(relu(conv1(relu(x)))) — a ReLU *before* conv1 too",
         lambda: run(pre=False)),
        ("missing residual: return x + conv2(...), not conv2(...) alone", lambda: run(residual=False)),
        ("the skip adds relu(x) instead of x — an in-place ReLU (or relu'd input reused) overwrote x; use "
         "F.relu(x) / nn.ReLU(inplace=False) and add the original x", lambda: run(skip_is_relu=True)),
        ("ReLU after the residual add: DUSt3R's unit ends with the add, x + conv2(...)", lambda: run(final_relu=True)),
    ]


RCU_SHAPE = "the 3x3 convs need padding=1 to keep (h, w)"


def residual_conv_unit(student: Callable, device=None) -> None:
    """``student(x, w1, b1, w2, b2) -> x + conv2(relu(conv1(relu(x))))`` with F.conv2d (padding 1)."""
    name = "residual_conv_unit"
    dev = get_device(device)
    with _sandbox():
        B, D, h, w = 2, 4, 3, 5
        x = _randn(B, D, h, w, seed=500, device=dev)
        w1, w2 = (_randn(D, D, 3, 3, seed=s, device=dev, scale=1 / 6) for s in (501, 502))
        b1, b2 = (_randn(D, seed=s, device=dev, scale=0.5) for s in (503, 504))
        x_before = x.clone()
        got = _run(name, student, x, w1, b1, w2, b2, what="residual_conv_unit(x, w1, b1, w2, b2)")
        if not torch.equal(x, x_before):
            _fail(name, "in-place ReLU: your code overwrote the input x (e.g. F.relu(x, inplace=True) or x.relu_()), "
                        "so the skip connection no longer adds the original x; use F.relu(x)")
        want = _rcu(x, w1, b1, w2, b2)
        _compare(name, got, want, label="output", dims="(B, D, h, w)",
                 shape_hints={(B, D, h - 4, w - 4): RCU_SHAPE, (B, D, h - 2, w - 2): RCU_SHAPE},
                 candidates=_rcu_candidates(lambda **kw: _rcu(x, w1, b1, w2, b2, **kw)))
    _passed(name, "pre-activation residual unit on a 3x5 map, D=4")


def ResidualConvUnit(student_cls, device=None) -> None:  # noqa: N802
    """``student_cls(dim)`` with ``conv1``, ``conv2`` (3x3, padding 1, bias)."""
    name = "ResidualConvUnit"
    _reject_reference(name, student_cls, _fusion.ResidualConvUnit)
    dev = get_device(device)
    with _sandbox():
        B, D, h, w = 2, 4, 3, 5
        ref = _randomize_(_fusion.ResidualConvUnit(D), 510).to(dev).eval()
        stu = _module(name, student_cls, D, what=f"ResidualConvUnit({D})")
        _reject_reference(name, stu, _fusion.ResidualConvUnit)
        _load(name, stu, ref.state_dict(), bias_note="DUSt3R's residual units use convs with a bias",
              hint=lambda m, u, s: ("name the convs conv1 and conv2: Conv2d(dim, dim, kernel_size=3, padding=1)"
                                    if m else None))
        stu = _prepare(stu, dev)
        x = _randn(B, D, h, w, seed=511, device=dev)
        x_before = x.clone()
        got = _run(name, stu, x, what="your forward")
        if not torch.equal(x, x_before):
            _fail(name, "in-place ReLU: your forward overwrote its input x (nn.ReLU(inplace=True) or "
                        "F.relu(x, inplace=True)), so the skip no longer adds the original x; DUSt3R's ReLU is "
                        "not in place")
        args = (ref.conv1.weight, ref.conv1.bias, ref.conv2.weight, ref.conv2.bias)
        _compare(name, got, ref(x), label="output", dims="(B, D, h, w)",
                 shape_hints={(B, D, h - 4, w - 4): RCU_SHAPE, (B, D, h - 2, w - 2): RCU_SHAPE},
                 candidates=_rcu_candidates(lambda **kw: _rcu(x, *args, **kw)))
    _passed(name, "conv1/conv2 weights loaded, pre-activation, input untouched, 3x5 map")


def crop_to(student: Callable, device=None) -> None:
    """``student(x, (h, w))``: keep the top-left h x w of (B, C, H, W)."""
    name = "crop_to"
    _reject_reference(name, student, _fusion.crop_to)
    dev = get_device(device)
    with _sandbox():
        x = _randn(2, 3, 6, 8, seed=520, device=dev)
        for size in ((5, 7), torch.Size([4, 8]), (6, 5), (6, 8), (3, 3)):
            want = _fusion.crop_to(x, size)
            h, w = size
            got = _run(name, student, x, size, what=f"crop_to(x (2, 3, 6, 8), {tuple(size)})")
            _compare(name, got, want, label=f"crop to {(h, w)}", dims="(B, C, h, w)",
                     shape_hints={(2, 3, h, 8): "crop the columns too", (2, 3, 6, w): "crop the rows too",
                                  (2, 3, w, h): "size is (h, w): rows first"},
                     candidates=[
                         ("you kept the bottom-right; DUSt3R keeps the top-left and drops the last rows/columns: "
                          "x[..., :h, :w]", lambda: x[..., 6 - h:, 8 - w:]),
                         ("you cropped the centre; DUSt3R keeps the top-left: x[..., :h, :w]",
                          lambda: x[..., (6 - h) // 2:(6 - h) // 2 + h, (8 - w) // 2:(8 - w) // 2 + w]),
                         ("you resized (interpolated) instead of cropping: DUSt3R slices x[..., :h, :w]",
                          lambda: _up(x, True, size=(h, w))),
                         ("you resized (interpolated) instead of cropping: DUSt3R slices x[..., :h, :w]",
                          lambda: _up(x, False, size=(h, w))),
                     ])
    _passed(name, "top-left crops of a 6x8 map, incl. the no-op and a torch.Size")


def _fusion_variant(ref: _fusion.FusionBlock, x, skip=None, align=True, mode="bilinear", rcu=None,
                    raw_skip=False, swap=False, up_first=False, skip_after=False):
    rcu = rcu or {}

    def unit(m, t):
        return _rcu(t, m.conv1.weight, m.conv1.bias, m.conv2.weight, m.conv2.bias, **rcu)
    if swap:
        x, skip = skip, x
    out = x
    if up_first:
        out = _up(out, align, mode)
        if skip is not None:
            out = out + _up(unit(ref.skip_unit, skip), align, mode)
        return F.conv2d(unit(ref.unit, out), ref.out_conv.weight, ref.out_conv.bias)
    if skip is not None and not skip_after:
        out = out + (skip if raw_skip else unit(ref.skip_unit, skip))
    out = unit(ref.unit, out)
    if skip is not None and skip_after:
        out = out + unit(ref.skip_unit, skip)
    out = _up(out, align, mode)
    return F.conv2d(out, ref.out_conv.weight, ref.out_conv.bias)


def _fusion_candidates(ref, x, skip):
    v = lambda **kw: (lambda: _fusion_variant(ref, x, skip, **kw))  # noqa: E731
    cands = [(ALIGN_MSG, v(align=False)), (NEAREST_MSG, v(mode="nearest")),
             ("the x2 upsample comes last (before out_conv), after the residual unit(s); you upsampled first",
              v(up_first=True))]
    cands += [(f"inside your residual units — {msg}", v(rcu=kw)) for msg, kw in (
        ("missing pre-activation: x + conv2(relu(conv1(relu(x))))", {"pre": False}),
        ("missing residual: x + conv2(...)", {"residual": False}),
        ("the skip adds relu(x) instead of x (in-place ReLU?)", {"skip_is_relu": True}))]
    if skip is not None:
        cands += [
            ("the skip input goes through skip_unit before the add: out = x + skip_unit(skip)", v(raw_skip=True)),
            ("x and skip swapped: the pyramid level (skip) goes through skip_unit; the path x is added as is",
             v(swap=True)),
            ("add skip_unit(skip) *before* the residual unit: out = unit(x + skip_unit(skip))", v(skip_after=True)),
        ]
    return cands


def FusionBlock(student_cls, device=None) -> None:  # noqa: N802
    """``student_cls(dim, with_skip=True)``: ``skip_unit``, ``unit``, ``out_conv``; forward(x, skip=None)."""
    name = "FusionBlock"
    _reject_reference(name, student_cls, _fusion.FusionBlock)
    dev = get_device(device)
    with _sandbox():
        B, D, h, w = 2, 4, 3, 5
        for with_skip in (True, False):
            ref = _randomize_(_fusion.FusionBlock(D, with_skip=with_skip), 530 + with_skip).to(dev).eval()
            stu = _module(name, student_cls, D, with_skip, what=f"FusionBlock({D}, with_skip={with_skip})")
            _reject_reference(name, stu, _fusion.FusionBlock)

            def hint(missing, unexpected, mismatched, with_skip=with_skip):
                if not with_skip and any(k.startswith("skip_unit.") for k in unexpected):
                    return ("with_skip=False: the coarsest block takes x alone, build it without a skip unit "
                            "(self.skip_unit = None; DUSt3R's exists but is never used)")
                if with_skip and any(k.startswith("skip_unit.") for k in missing):
                    return "with_skip=True needs self.skip_unit, a residual conv unit for the skip input"
                if any(k.startswith("out_conv") for k, *_ in mismatched):
                    return "out_conv is a 1x1 Conv2d(dim, dim)"
                return ("attributes: skip_unit and unit (residual conv units with conv1, conv2) and out_conv "
                        "(1x1 conv)")
            _load(name, stu, ref.state_dict(), hint=hint, bias_note="DUSt3R's fusion convs have a bias")
            stu = _prepare(stu, dev)
            x = _randn(B, D, h, w, seed=540, device=dev)
            skip = _randn(B, D, h, w, seed=541, device=dev) if with_skip else None
            before = (x.clone(), None if skip is None else skip.clone())
            args = (x, skip) if with_skip else (x,)
            got = _run(name, stu, *args, what=f"forward({'x, skip' if with_skip else 'x'})")
            if not torch.equal(x, before[0]) or (skip is not None and not torch.equal(skip, before[1])):
                _fail(name, "your block modified its inputs in place (an in-place ReLU in a residual unit?); "
                            "DUSt3R's ReLU is not in place")
            _compare(name, got, ref(*args), label=f"output (with_skip={with_skip})", dims="(B, D, 2h, 2w)",
                     shape_hints={(B, D, h, w): "missing the x2 upsample (bilinear, align_corners=True)"},
                     candidates=_fusion_candidates(ref, x, skip))
    _passed(name, "with and without skip on a 3x5 map: x + skip_unit(skip) -> unit -> x2 bilinear "
                  "(align_corners=True) -> out_conv")


def _fuse_reference(levels, fusion, crop=lambda p, s: p[..., :s[0], :s[1]]):
    path = fusion[3](levels[3])
    path = crop(path, levels[2].shape[-2:])
    path = fusion[2](path, levels[2])
    path = fusion[1](path, levels[1])
    return fusion[0](path, levels[0])


def fuse_pyramid(student: Callable, device=None) -> None:
    """``student(levels, fusion)``: coarse-to-fine fusion of 4 levels with the odd-grid crop."""
    name = "fuse_pyramid"
    dev = get_device(device)
    with _sandbox():
        B, D = 2, 4
        fusion = nn.ModuleList(_fusion.FusionBlock(D, with_skip=i < 3) for i in range(4))
        fusion = _randomize_(fusion, 550).to(dev).eval()
        for nh, nw in ((4, 6), (3, 5)):
            sizes = [(4 * nh, 4 * nw), (2 * nh, 2 * nw), (nh, nw), (math.ceil(nh / 2), math.ceil(nw / 2))]
            levels = [_randn(B, D, *s, seed=551 + i, device=dev) for i, s in enumerate(sizes)]
            want = _fuse_reference(levels, fusion)
            odd = nh % 2 or nw % 2
            try:
                got = student(list(levels), fusion)
            except NotImplementedError as e:
                _fail(name, f"not implemented yet — your code raised NotImplementedError ({e}): replace the stub "
                            f"with your code")
            except Exception as e:  # noqa: BLE001
                if odd and "same shape" in str(e):
                    raise AssertionError(
                        f"{name}: missing crop on odd grids: on a {nh}x{nw} grid the coarsest level has "
                        f"{sizes[3][0]}x{sizes[3][1]} cells, fusion[3] doubles that to {2 * sizes[3][0]}x"
                        f"{2 * sizes[3][1]}, which must be cropped (top-left) to {nh}x{nw} before fusion[2] "
                        f"({type(e).__name__}: {e})") from e
                raise AssertionError(f"{name}: your code raised {type(e).__name__} on a {nh}x{nw} grid: {e} — "
                                     f"go coarse to fine: fusion[3](levels[3]) alone, then fusion[2](path, "
                                     f"levels[2]), fusion[1](path, levels[1]), fusion[0](path, levels[0])") from e
            _compare(name, got, want, label=f"fused map for a {nh}x{nw} grid", dims="(B, D, 8nh, 8nw)",
                     candidates=[
                         ("you kept the bottom-right of the coarse path; DUSt3R crops to the top-left: "
                          "path[..., :h, :w]", lambda: _fuse_reference(levels, fusion, lambda p, s: p[..., -s[0]:, -s[1]:])),
                         ("you resized the coarse path (interpolation) instead of cropping it: DUSt3R slices "
                          "path[..., :h, :w]",
                          lambda: _fuse_reference(levels, fusion, lambda p, s: _up(p, True, size=s))),
                         ("you resized the coarse path (interpolation) instead of cropping it: DUSt3R slices "
                          "path[..., :h, :w]",
                          lambda: _fuse_reference(levels, fusion, lambda p, s: _up(p, False, size=s))),
                     ])
    _passed(name, "even 4x6 and odd 3x5 grids, crop after fusion[3]")


# ============================================================================ 05 head and post-processing

def _head_variant(ref, x, align=True, relu="refine", order="reduce_up_refine"):
    r, f, p = ref.reduce, ref.refine, ref.predict
    conv = lambda m, t, pad: F.conv2d(t, m.weight, m.bias, padding=pad)  # noqa: E731
    if order == "up_first":
        y = conv(r, _up(x, align), 1)
        y = F.relu(conv(f, y, 1))
        return conv(p, y, 0)
    y = conv(r, x, 1)
    if relu == "after_reduce_too":
        y = F.relu(y)
    if order == "reduce_up_refine":
        y = conv(f, _up(y, align), 1)
    else:  # refine before the upsample
        y = _up(F.relu(conv(f, y, 1)), align)
        return conv(p, y, 0)
    if relu in ("refine", "after_reduce_too", "also_predict"):
        y = F.relu(y)
    y = conv(p, y, 0)
    return F.relu(y) if relu == "also_predict" else y


def _head_candidates(ref, x):
    v = lambda **kw: (lambda: _head_variant(ref, x, **kw))  # noqa: E731
    return [(ALIGN_MSG, v(align=False)),
            ("missing ReLU between refine and predict", v(relu="none")),
            ("ReLU after reduce: DUSt3R's head has a single ReLU, after refine (head.3)", v(relu="after_reduce_too")),
            ("ReLU after predict: the raw output must stay signed (the post-processing maps it)", v(relu="also_predict")),
            ("the x2 upsample comes right after reduce (head.1), before refine", v(order="refine_first")),
            ("the x2 upsample comes after reduce (head.1), not before it", v(order="up_first"))]


def RegressionHead(student_cls, device=None) -> None:  # noqa: N802
    """``student_cls(feature_dim, last_dim, out_channels)``: ``reduce``, ``refine``, ``predict``."""
    name = "RegressionHead"
    _reject_reference(name, student_cls, _head.RegressionHead)
    dev = get_device(device)
    with _sandbox():
        B, Dm, last, out, h, w = 2, 8, 6, 4, 3, 5
        ref = _randomize_(_head.RegressionHead(Dm, last, out), 600).to(dev).eval()
        stu = _module(name, student_cls, Dm, last, out, what=f"RegressionHead({Dm}, {last}, {out})")
        _reject_reference(name, stu, _head.RegressionHead)

        def hint(missing, unexpected, mismatched):
            keys = {k: (a, b) for k, a, b in mismatched}
            if "reduce.weight" in keys:
                return "reduce is a 3x3 conv that halves the channels: feature_dim -> feature_dim // 2 (padding=1)"
            if "refine.weight" in keys:
                return "refine is a 3x3 conv feature_dim // 2 -> last_dim (padding=1)"
            if "predict.weight" in keys:
                return "predict is a 1x1 conv last_dim -> out_channels"
            return "attributes: reduce (3x3), refine (3x3), predict (1x1), all with bias"
        _load(name, stu, ref.state_dict(), hint=hint, bias_note="the head's three convs have a bias")
        stu = _prepare(stu, dev)
        x = _randn(B, Dm, h, w, seed=601, device=dev)
        got = _run(name, stu, x, what="your forward")
        _compare(name, got, ref(x), label="raw output", dims="(B, out_channels, 2h, 2w)",
                 shape_hints={(B, out, h, w): "missing the x2 upsample (bilinear, align_corners=True)"},
                 candidates=_head_candidates(ref, x))
    _passed(name, "reduce -> x2 bilinear (align_corners=True) -> refine -> ReLU -> predict, on a 3x5 map")


def head_sequential(student: Callable, device=None) -> None:
    """``student(feature_dim, last_dim, out_channels) -> nn.Sequential`` laid out like DUSt3R's ``head.0..4``."""
    name = "head_sequential"
    dev = get_device(device)
    with _sandbox():
        B, Dm, last, out, h, w = 2, 8, 6, 4, 3, 5
        ref = _randomize_(_head.RegressionHead(Dm, last, out), 610).to(dev).eval()
        sd = {f"{i}.{p}": getattr(ref, m).get_parameter(p) for i, m in ((0, "reduce"), (2, "refine"), (4, "predict"))
              for p in ("weight", "bias")}
        stu = _module(name, student, Dm, last, out, what=f"head_sequential({Dm}, {last}, {out})")
        _reject_reference(name, stu, _head.RegressionHead)
        if not isinstance(stu, nn.Sequential):
            _fail(name, f"return an nn.Sequential (its indices become the checkpoint keys), got {type(stu).__name__}")
        if len(stu) != 5:
            _fail(name, f"expected 5 layers (0 reduce conv, 1 upsample, 2 refine conv, 3 ReLU, 4 predict conv), "
                        f"got {len(stu)}: {[type(m).__name__ for m in stu]}")
        _load(name, stu, sd, hint=lambda m, u, s: (
            "the convs must sit at indices 0, 2, 4 (DUSt3R's keys head.0, head.2, head.4); index 1 is the "
            "parameter-free upsampling layer (e.g. nn.Upsample(scale_factor=2, mode='bilinear', "
            "align_corners=True)) and index 3 the ReLU"))
        stu = _prepare(stu, dev)
        x = _randn(B, Dm, h, w, seed=611, device=dev)
        got = _run(name, stu, x, what="your nn.Sequential")
        _compare(name, got, ref(x), label="raw output", dims="(B, out_channels, 2h, 2w)",
                 shape_hints={(B, out, h, w): "index 1 must upsample x2"},
                 candidates=[(ALIGN_MSG + " — nn.Upsample's default is align_corners=False",
                              lambda: _head_variant(ref, x, align=False)),
                             (NEAREST_MSG + " (nn.Upsample defaults to mode='nearest')",
                              lambda: _head_variant_nearest(ref, x))] + _head_candidates(ref, x)[1:])
    _passed(name, "nn.Sequential with convs at 0, 2, 4 loads DUSt3R-style head.0/2/4 weights; output matches")


def _head_variant_nearest(ref, x):
    y = F.conv2d(x, ref.reduce.weight, ref.reduce.bias, padding=1)
    y = F.relu(F.conv2d(_up(y, mode="nearest"), ref.refine.weight, ref.refine.bias, padding=1))
    return F.conv2d(y, ref.predict.weight, ref.predict.bias)


def _depth_variant(xyz, kind):
    d = xyz.norm(dim=-1, keepdim=True)
    u = xyz / d.clamp(min=1e-8)
    return {"exp": u * torch.exp(d), "elementwise_exp": torch.exp(xyz), "elementwise_expm1": torch.expm1(xyz),
            "no_clamp": xyz / d * torch.expm1(d), "elementwise_square": xyz ** 2, "square_as_linear": xyz,
            "norm_dim1": xyz / xyz.norm(dim=1, keepdim=True).clamp(min=1e-8) * torch.expm1(xyz.norm(dim=1, keepdim=True)),
            "sq_elementwise_sign": xyz * xyz.abs(), "exp_of_square": u * d.square()}[kind]


def depth_activation(student: Callable, device=None) -> None:
    """``student(xyz, mode)`` for modes ('linear'|'square'|'exp', -inf, inf): keep direction, remap length."""
    name = "depth_activation"
    _reject_reference(name, student, _post.depth_activation)
    dev = get_device(device)
    with _sandbox():
        xyz = _randn(2, 3, 5, 3, seed=700, device=dev)
        xyz[0, 0, 0] = 0.0                                   # a zero vector: stays at the camera centre
        xyz_before = xyz.clone()
        for mode_name in ("exp", "square", "linear"):
            mode = (mode_name, -INF, INF)
            want = _post.depth_activation(xyz, mode)
            got = _run(name, student, xyz, mode, what=f"depth_activation(xyz, {mode})")
            if not torch.equal(xyz, xyz_before):
                _fail(name, "you modified xyz in place; return a new tensor")
            v = lambda k: (lambda: _depth_variant(xyz, k))  # noqa: E731
            cands = [
                ("NaN at the zero vector (0/0): clamp the norm before dividing, d.clamp(min=1e-8)", v("no_clamp")),
                ("norm over the wrong axis: the vectors are the last dimension (..., 3), norm(dim=-1, keepdim=True)",
                 v("norm_dim1")),
            ]
            if mode_name == "exp":
                cands = [("exp instead of expm1: the length must become e^d − 1 (torch.expm1), so a zero vector "
                          "stays at the camera centre", v("exp")),
                         ("you applied exp to each coordinate; DUSt3R keeps the vector's direction and remaps its "
                          "length: xyz / d * expm1(d) with d = |xyz|", v("elementwise_exp")),
                         ("you applied expm1 to each coordinate; DUSt3R keeps the vector's direction and remaps "
                          "its length: xyz / d * expm1(d) with d = |xyz|", v("elementwise_expm1")),
                         ("you used the 'square' formula for 'exp'", v("exp_of_square"))] + cands
            elif mode_name == "square":
                cands = [("you squared each coordinate (that loses the sign); DUSt3R keeps the direction and "
                          "squares the length: xyz / d * d^2", v("elementwise_square")),
                         ("you squared each coordinate keeping its sign; DUSt3R squares the vector's length: "
                          "xyz / d * d^2 = xyz * d", v("sq_elementwise_sign")),
                         ("'square' returned xyz unchanged (that is 'linear')", v("square_as_linear"))] + cands
            else:
                cands = [("'linear' must return xyz unchanged", lambda: xyz)]
            _compare(name, got, want, label=f"mode {mode_name!r}", dims="(..., 3)",
                     shape_hints={(2, 3, 5, 1): "return the vectors (..., 3), not their lengths"},
                     candidates=cands)
    _passed(name, "modes 'exp', 'square', 'linear' incl. a zero vector")


def conf_activation(student: Callable, device=None) -> None:
    """``student(x, mode)`` for ('exp', vmin, vmax) and ('sigmoid', vmin, vmax)."""
    name = "conf_activation"
    _reject_reference(name, student, _post.conf_activation)
    dev = get_device(device)
    with _sandbox():
        x = _randn(2, 3, 5, seed=710, device=dev, scale=1.5)
        for mode in (("exp", 1, INF), ("exp", 0.5, INF), ("exp", 1, 5), ("sigmoid", 0, 1), ("sigmoid", 1, 3)):
            name_, vmin, vmax = mode
            want = _post.conf_activation(x, mode)
            got = _run(name, student, x, mode, what=f"conf_activation(x, {mode})")
            s = torch.sigmoid(x)
            e = torch.exp(x)
            offset = (f"wrong confidence offset: DUSt3R's confidence is vmin + e^x (with ('exp', 1, inf): 1 + e^x, "
                      f"always > 1)")
            cands = {"exp": [
                (offset, lambda: e),
                ("clip e^x at vmax - vmin: vmin + exp(x).clamp(max=vmax - vmin)", lambda: vmin + e),
                ("wrong confidence offset: use vmin from the mode tuple, not a hard-coded 1", lambda: 1 + e),
                ("wrong confidence offset: vmin + e^x, not vmin * e^x", lambda: vmin * e),
                ("clip e^x at vmax - vmin (the result then stays <= vmax), not at vmax",
                 lambda: vmin + e.clamp(max=vmax)),
                ("you used expm1; the confidence is vmin + e^x", lambda: vmin + torch.expm1(x).clamp(max=vmax - vmin)),
            ], "sigmoid": [
                ("scale the sigmoid to [vmin, vmax]: (vmax - vmin) * sigmoid(x) + vmin", lambda: s),
                ("scale the sigmoid by (vmax - vmin): (vmax - vmin) * sigmoid(x) + vmin", lambda: s + vmin),
                ("the scale is (vmax - vmin), not vmax: (vmax - vmin) * sigmoid(x) + vmin", lambda: vmax * s + vmin),
                ("you used exp for the 'sigmoid' mode", lambda: vmin + e.clamp(max=vmax - vmin)),
            ]}[name_]
            _compare(name, got, want, label=f"mode {mode}", dims="(B, H, W)", candidates=cands)
    _passed(name, "('exp', 1, inf), ('exp', 0.5, inf), ('exp', 1, 5), ('sigmoid', 0, 1), ('sigmoid', 1, 3)")


def postprocess(student: Callable, device=None) -> None:
    """``student(raw, depth_mode, conf_mode) -> {'pts3d': (B, H, W, 3), 'conf': (B, H, W)}``."""
    name = "postprocess"
    _reject_reference(name, student, _post.postprocess)
    dev = get_device(device)
    with _sandbox():
        B, H, W = 2, 3, 5
        raw = _randn(B, 4, H, W, seed=720, device=dev)
        dm, cm = ("exp", -INF, INF), ("exp", 1, INF)
        want = _post.postprocess(raw, dm, cm)
        got = _run(name, student, raw, dm, cm, what=f"postprocess(raw, {dm}, {cm})")
        if not isinstance(got, Mapping) or set(got) != {"pts3d", "conf"}:
            _fail(name, f"return a dict with keys 'pts3d' and 'conf', got "
                        f"{sorted(got) if isinstance(got, Mapping) else type(got).__name__}")
        da, ca = _post.depth_activation, _post.conf_activation
        _compare(name, got["pts3d"], want["pts3d"], label="pts3d", dims="(B, H, W, 3)",
                 shape_hints={(B, 3, H, W): "channels last: permute the raw map (B, C, H, W) -> (B, H, W, C) first"},
                 candidates=[
                     ("reshape instead of permute: raw.reshape(B, H, W, C) scrambles channels and pixels; use "
                      "raw.permute(0, 2, 3, 1)", lambda: da(raw.reshape(B, H, W, 4)[..., :3], dm)),
                     ("channel order: the raw channels are x, y, z, conf — pts3d is channels 0:3",
                      lambda: da(raw.permute(0, 2, 3, 1)[..., 1:4], dm)),
                     ("pts3d must go through the depth activation (mode 'exp': xyz / d * expm1(d))",
                      lambda: raw.permute(0, 2, 3, 1)[..., :3]),
                 ])
        _compare(name, got["conf"], want["conf"], label="conf", dims="(B, H, W)",
                 shape_hints={(B, H, W, 1): "conf has no channel dimension: take fmap[..., 3], not fmap[..., 3:]",
                              (B, 1, H, W): "channels last and no channel dimension: conf is (B, H, W)"},
                 candidates=[
                     ("reshape instead of permute: raw.reshape(B, H, W, C) scrambles channels and pixels; use "
                      "raw.permute(0, 2, 3, 1)", lambda: ca(raw.reshape(B, H, W, 4)[..., 3], cm)),
                     ("channel order: the raw channels are x, y, z, conf — conf is the last channel, 3",
                      lambda: ca(raw[:, 0], cm)),
                     ("conf must go through the confidence activation (mode ('exp', 1, inf): 1 + e^x)",
                      lambda: raw[:, 3]),
                 ])
        raw3 = raw[:, :3]
        got = _run(name, student, raw3, ("linear", -INF, INF), None,
                   what="postprocess(raw with 3 channels, ('linear', -inf, inf), None)",
                   hint="with conf_mode=None the raw map has 3 channels (x, y, z) and no confidence: "
                        "return only {'pts3d': ...}")
        if not isinstance(got, Mapping) or set(got) != {"pts3d"}:
            _fail(name, f"with conf_mode=None (a 3-channel raw map) return only {{'pts3d': ...}}, got "
                        f"{sorted(got) if isinstance(got, Mapping) else type(got).__name__}")
        _compare(name, got["pts3d"], raw3.permute(0, 2, 3, 1), label="pts3d with mode 'linear'",
                 dims="(B, H, W, 3)")
    _passed(name, "exp depth + exp conf on a 4-channel map; linear depth without conf on a 3-channel map")


# ============================================================================ 06 DUSt3R head

def _small_dust3r_head(seed: int, dev) -> "_dust3r.DUSt3RHead":
    head = _dust3r.dust3r_dpt_head(enc_embed_dim=8, dec_embed_dim=6, dec_depth=10, feature_dim=8, last_dim=6,
                                   layer_dims=(3, 4, 5, 6), device="cpu")
    return _randomize_(head, seed).to(dev).eval()


def _dust3r_variant(head, tokens, image_size, hooks=None, to_grid=None, crop=None, swap_hw=False):
    dpt = head.dpt
    H, W = image_size
    if swap_hw:
        H, W = W, H
    nh, nw = H // dpt.patch_size, W // dpt.patch_size
    to_grid = to_grid or (lambda t: rearrange(t, "b (nh nw) c -> b c nh nw", nh=nh, nw=nw))
    crop = crop or (lambda p, s: p[..., :s[0], :s[1]])
    layers = [tokens[h] for h in (hooks or dpt.hooks)]
    layers = [to_grid(t) for t in layers]
    layers = [p(r(g)) for p, r, g in zip(dpt.project, dpt.reassemble, layers)]
    path = crop(dpt.fusion[3](layers[3]), layers[2].shape[-2:])
    path = dpt.fusion[2](path, layers[2])
    path = dpt.fusion[1](path, layers[1])
    path = dpt.fusion[0](path, layers[0])
    return _post.postprocess(dpt.head(path), head.depth_mode, head.conf_mode)


def dust3r_forward(student: Callable, device=None) -> None:
    """``student(head, tokens, image_size) -> {'pts3d', 'conf'}`` from the head's parts (not ``head(...)``)."""
    name = "dust3r_forward"
    dev = get_device(device)
    with _sandbox():
        head = _small_dust3r_head(800, dev)
        B, H, W = 2, 48, 80                                  # an odd 3x5 patch grid
        nh, nw = H // 16, W // 16
        tokens = [_randn(B, nh * nw, 8 if i == 0 else 6, seed=801 + i, device=dev) for i in range(11)]
        want = head(tokens, (H, W))

        def forbidden(*args, **kwargs):
            raise AssertionError(f"{name}: implement it yourself — call the parts (head.dpt.reassemble[i], "
                                 f"head.dpt.project[i], head.dpt.fusion[i], head.dpt.head), not the assembled "
                                 f"head(...) or head.dpt(...)")
        head.forward = forbidden
        head.dpt.forward = forbidden
        try:
            got = student(head, list(tokens), (H, W))
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001
            if "same shape" in str(e):
                raise AssertionError(
                    f"{name}: missing crop on odd grids: {H}x{W} pixels give a 3x5 patch grid; the x1/2 level has "
                    f"2x3 cells, fusion[3] doubles that to 4x6, which must be cropped (top-left) to 3x5 before "
                    f"fusion[2] ({type(e).__name__}: {e})") from e
            _run(name, lambda: (_ for _ in ()).throw(e), what=f"dust3r_forward(head, tokens, {(H, W)})")
        if not isinstance(got, Mapping) or set(got) != {"pts3d", "conf"}:
            _fail(name, f"return the post-processed dict {{'pts3d': (B, H, W, 3), 'conf': (B, H, W)}}, got "
                        f"{sorted(got) if isinstance(got, Mapping) else type(got).__name__}"
                        + (f" {_shape(got)} — apply postprocess(raw, head.depth_mode, head.conf_mode)"
                           if isinstance(got, torch.Tensor) else ""))
        dpt = head.dpt
        v = lambda **kw: (lambda: _dust3r_variant(head, tokens, (H, W), **kw)["pts3d"])  # noqa: E731
        L = 10
        _compare(name, got["pts3d"], want["pts3d"], label="pts3d", dims="(B, H, W, 3)",
                 shape_hints={(B, W, H, 3): "image_size is (H, W): nh = H // 16 rows, nw = W // 16 columns",
                              (B, 3, H, W): "channels last: post-process the raw map"},
                 candidates=[
                     ("reshape instead of rearrange: tokens.reshape(B, C, nh, nw) mixes channels and positions; "
                      "use rearrange(t, 'b (nh nw) c -> b c nh nw')",
                      v(to_grid=lambda t: t.reshape(t.shape[0], t.shape[2], nh, nw))),
                     ("swapped nh/nw in the token-to-grid pattern: tokens are row-major, 'b (nh nw) c'",
                      v(to_grid=lambda t: rearrange(t, "b (nw nh) c -> b c nh nw", nh=nh, nw=nw))),
                     (f"wrong hooks: use head.dpt.hooks = {list(dpt.hooks)} ([0, 2L//4, 3L//4, L] over the "
                      f"{L + 1}-entry token list); the last decoder block is index L, not L - 1",
                      v(hooks=[0, 2 * L // 4, 3 * L // 4, L - 1])),
                     (f"wrong hooks: use head.dpt.hooks = {list(dpt.hooks)}, not the last four layers",
                      v(hooks=[L - 3, L - 2, L - 1, L])),
                     ("you kept the bottom-right of the coarse path; DUSt3R's odd-grid crop keeps the top-left",
                      v(crop=lambda p, s: p[..., -s[0]:, -s[1]:])),
                     ("you resized the coarse path instead of cropping it (top-left slice, path[..., :h, :w])",
                      v(crop=lambda p, s: _up(p, True, size=s))),
                 ])
        _compare(name, got["conf"], want["conf"], label="conf", dims="(B, H, W)",
                 shape_hints={(B, H, W, 1): "conf has no channel dimension"})
    _passed(name, "hooks [0, 5, 7, 10] of 11 layers, odd 3x5 grid (48x80), pts3d and conf from the parts")


def _which_source(t: torch.Tensor, sources: Mapping[str, torch.Tensor]) -> list[str]:
    t = t.detach().cpu()
    return [k for k, s in sources.items() if s.shape == t.shape and torch.equal(s, t)]


ALIAS_RE = re.compile(r"dpt\.scratch\.layer\d_rn\.weight")


def _mapping_hint(ours: str, theirs: str, expected_theirs: str) -> str:
    rn = re.compile(r"refinenet(\d)\.(resConfUnit\d|out_conv)")
    a, b = rn.search(theirs), rn.search(expected_theirs)
    if a and b and a.group(1) != b.group(1):
        return ("refinenet{k} is fusion.{k-1}: refinenet1 is the finest block (fusion.0), refinenet4 the "
                "coarsest (fusion.3)")
    if a and b and a.group(2) != b.group(2):
        return ("resConfUnit1 is the skip unit (fusion.i.skip_unit: it refines the pyramid level before the add), "
                "resConfUnit2 the unit after the add (fusion.i.unit)")
    if theirs.startswith("dpt.head.") and expected_theirs.startswith("dpt.head."):
        return "head.0 / head.2 / head.4 are reduce / refine / predict (head.1, head.3: upsample and ReLU, no weights)"
    if "act_postprocess" in theirs or "layer_rn" in theirs:
        return "act_postprocess.{i}.{j} -> reassemble.{i}.{j} and scratch.layer_rn.{i} -> project.{i}, same i"
    return ""


def convert_dust3r_state_dict(student: Callable, device=None) -> None:
    """``student(dust3r_sd) -> state dict`` that ``DUSt3RHead.load_state_dict(..., strict=True)`` accepts."""
    name = "convert_dust3r_state_dict"
    _reject_reference(name, student, _dust3r.load_dust3r_head_weights, _dust3r.dust3r_state_dict)
    dev = get_device(device)
    with _sandbox():
        src_head = _small_dust3r_head(810, torch.device("cpu"))
        sd = _dust3r.dust3r_state_dict(src_head)                 # with the aliases and the unused zeros
        sources = {k: v.clone() for k, v in sd.items()}
        ours = src_head.state_dict()
        mapping = {"dpt." + m: "dpt." + t for t, m in _dust3r._key_map(src_head.dpt).items()}
        got = _run(name, student, dict(sd), what="convert_dust3r_state_dict(sd)")
        if not isinstance(got, Mapping):
            _fail(name, f"return a dict {{our key: tensor}}, got {type(got).__name__}")
        for k, v in got.items():
            if not isinstance(v, torch.Tensor):
                _fail(name, f"{k!r} maps to a {type(v).__name__}, expected a tensor")
        unused = [k for k in sd if "refinenet4.resConfUnit1" in k]
        # 1. expected keys holding the wrong tensor: say which DUSt3R key they came from
        for k in ours:
            if k in got and not (got[k].shape == ours[k].shape and torch.equal(got[k].detach().cpu(), ours[k])):
                src = _which_source(got[k], sources)
                if src and all(s in unused for s in src):
                    _fail(name, f"{k} holds zeros from the never-used {src[0]}: refinenet4's resConfUnit1 is "
                                f"dropped; its resConfUnit2 is fusion.3.unit")
                if src:
                    hint = _mapping_hint(k, src[0], mapping[k])
                    _fail(name, f"{k} holds DUSt3R's {src[0]}, expected {mapping[k]}" + (f" — {hint}" if hint else ""))
                _fail(name, f"{k} should be DUSt3R's {mapping[k]} unchanged (shape {list(ours[k].shape)}), got "
                            f"a tensor of shape {list(got[k].shape)} that equals none of the checkpoint's tensors")
        # 2. keys the head does not have
        for k in got:
            if k in ours:
                continue
            src = _which_source(got[k], sources)
            if src and all(s in unused for s in src):
                _fail(name, f"unexpected key {k!r}: refinenet4.resConfUnit1 is never used (the coarsest block "
                            f"gets one input); drop its 4 tensors")
            if any(ALIAS_RE.fullmatch(s) for s in src):
                _fail(name, f"unexpected key {k!r}: scratch.layerN_rn are aliases of scratch.layer_rn.{{N-1}} (one "
                            f"tensor stored twice); map layer_rn and drop the aliases (after checking they are equal)")
            if "fusion.4" in k:
                _fail(name, f"unexpected key {k!r}: there are only fusion.0..3 — refinenet{{k}} is fusion.{{k-1}}")
            if not k.startswith("dpt."):
                _fail(name, f"unexpected key {k!r}: keep the 'dpt.' prefix (a DUSt3RHead's keys look like "
                            f"'dpt.reassemble.0.0.weight')")
            _fail(name, f"unexpected key {k!r}" + (f" (it holds DUSt3R's {src[0]})" if src else "")
                        + f"; the head's keys are like {list(ours)[:3]}")
        missing = [k for k in ours if k not in got]
        if missing:
            _fail(name, f"missing {len(missing)} key(s), e.g. {missing[:3]} (DUSt3R's {mapping[missing[0]]})")
        dst = _small_dust3r_head(811, dev)
        try:
            dst.load_state_dict({k: v.detach().clone() for k, v in got.items()}, strict=True)
        except Exception as e:  # noqa: BLE001
            _fail(name, f"DUSt3RHead.load_state_dict(strict=True) rejected your dict: {e}")
        src_head = src_head.to(dev)
        tokens = [_randn(1, 6, 8 if i == 0 else 6, seed=812 + i, device=dev) for i in range(11)]
        out_a, out_b = src_head(tokens, (32, 48)), dst(tokens, (32, 48))
        _compare(name, out_b["pts3d"], out_a["pts3d"], label="pts3d after loading", dims="(B, H, W, 3)")
    _passed(name, f"{len(sd)} DUSt3R keys (aliases and the unused refinenet4.resConfUnit1 dropped) -> "
                  f"{len(ours)} head keys; outputs match")
