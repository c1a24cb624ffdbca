"""Synthetic two-view scenes with exact depth, point maps and validity masks.

A scene is a floor, an optional back wall and a few boxes and spheres standing on the floor,
each with a procedural texture that is a function of the 3D surface point (so both views of a
scene see the same texture at the same place). Images are ray-cast with a pinhole camera in
numpy (float64), which makes every label exact:

    camera frame (OpenCV): x right, y down, z forward; pixel (row i, column j) has its centre at
    (u, v) = (j, i), so the ray of a pixel is d = K^-1 [u, v, 1] (d_z = 1). A ray that hits a
    surface at parameter t gives depth z = t and point X = t * d, hence
    X = depth * K^-1 [u, v, 1] exactly (back-projection of the depth equals the point map).

Pixels whose ray hits nothing (sky) or lands farther than `max_depth` are invalid (mask False,
depth 0, point 0). Everything is seeded: scene `i` of `SyntheticScenes(seed=s)` is the same on
every run and every machine (numpy's PCG64 generator, no global state).

View 2 looks at the same scene from a camera moved sideways and turned a little.
`pose_2to1` is the 4x4 rigid transform that maps camera-2 coordinates to camera-1 coordinates
(X1 = R X2 + t), and `pts2_in_1` is view 2's point map expressed in camera 1's frame — the
quantity DUSt3R's second head regresses.

`swap_views`, `flip_views` and `augment` make more training pairs from rendered ones without rendering:
the views exchanged (view 2 becomes the reference camera) and both images mirrored left-right, with the
labels transformed exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..grid import check_image_size, positive_int

# ----------------------------------------------------------------------------- camera


def intrinsics(image_size: tuple[int, int], focal: float) -> np.ndarray:
    """Pinhole K for an (H, W) image, principal point at the image centre ((W-1)/2, (H-1)/2)."""
    H, W = check_image_size(image_size)
    return np.array([[focal, 0.0, (W - 1) / 2.0],
                     [0.0, focal, (H - 1) / 2.0],
                     [0.0, 0.0, 1.0]])  # (3, 3)


def pixel_rays(K: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Camera-frame ray of every pixel, d = K^-1 [u, v, 1] with d_z = 1."""
    H, W = check_image_size(image_size)
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")  # (H, W) each
    uv1 = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
    return uv1 @ np.linalg.inv(K).T  # (H, W, 3)


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Point map from a depth map: X = depth * K^-1 [u, v, 1].  (..., H, W) -> (..., H, W, 3)."""
    if not isinstance(depth, torch.Tensor) or not isinstance(K, torch.Tensor):
        raise TypeError(f"expected torch tensors for depth and K, got {type(depth).__name__} and {type(K).__name__}")
    if depth.dim() < 2 or K.shape[-2:] != (3, 3):
        raise ValueError(f"expected depth (..., H, W) and K (..., 3, 3), got {tuple(depth.shape)} and {tuple(K.shape)}")
    H, W = depth.shape[-2:]
    v, u = torch.meshgrid(torch.arange(H, dtype=depth.dtype, device=depth.device),
                          torch.arange(W, dtype=depth.dtype, device=depth.device), indexing="ij")  # (H, W) each
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]  # (..., 1, 1)
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]  # (..., 1, 1)
    x = (u - cx) / fx * depth  # (..., H, W)
    y = (v - cy) / fy * depth  # (..., H, W)
    return torch.stack([x, y, depth], dim=-1)  # (..., H, W, 3)


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation R = Ry(yaw) @ Rx(pitch) @ Rz(roll) (radians; y is down, so yaw turns left/right)."""
    cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Ry @ Rx @ Rz  # (3, 3)


def rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a rotation and a translation."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T  # (4, 4)


def transform_points(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply a rigid transform: (..., 4, 4) and (..., H, W, 3) -> (..., H, W, 3)."""
    R, t = T[..., None, None, :3, :3], T[..., None, None, :3, 3]  # (..., 1, 1, 3, 3), (..., 1, 1, 3)
    return (R @ pts[..., None])[..., 0] + t  # (..., H, W, 3)


# ----------------------------------------------------------------------------- scene


@dataclass
class Primitive:
    """One textured surface. kind: 'plane' | 'sphere' | 'box' (world frame, y down)."""
    kind: str
    center: np.ndarray            # plane: a point on it; sphere/box: centre
    size: np.ndarray              # plane: unit normal; sphere: [radius]; box: half-extents (3,)
    R: np.ndarray                 # object-to-world rotation (texture frame for all kinds)
    colors: np.ndarray            # (2, 3) RGB in [0, 1] for the two texture phases
    freq: float                   # texture frequency (stripes per metre)


def random_scene(rng: np.random.Generator, wall_prob: float = 0.6) -> tuple[list[Primitive], float]:
    """Floor at y = cam_height, optional back wall, 2-5 boxes and spheres standing on the floor."""
    h = rng.uniform(0.9, 1.5)  # camera height above the floor
    floor = Primitive("plane", np.array([0.0, h, 0.0]), np.array([0.0, -1.0, 0.0]), rotation(yaw=rng.uniform(0, math.pi)),
                      _palette(rng), rng.uniform(1.0, 2.0))
    prims = [floor]
    if rng.random() < wall_prob:
        zw = rng.uniform(6.0, 9.0)
        prims.append(Primitive("plane", np.array([0.0, 0.0, zw]), np.array([0.0, 0.0, -1.0]), np.eye(3),
                               _palette(rng), rng.uniform(0.8, 2.0)))
    for _ in range(int(rng.integers(2, 6))):
        x, z = rng.uniform(-2.2, 2.2), rng.uniform(2.0, 6.5)
        R = rotation(yaw=rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:
            r = rng.uniform(0.3, 0.8)
            prims.append(Primitive("sphere", np.array([x, h - r, z]), np.array([r]), R, _palette(rng), rng.uniform(2.0, 5.0)))
        else:
            e = rng.uniform(0.2, 0.6, size=3)
            prims.append(Primitive("box", np.array([x, h - e[1], z]), e, R, _palette(rng), rng.uniform(2.0, 5.0)))
    return prims, h


def _palette(rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0.15, 0.95, size=3)
    b = np.clip(a * rng.uniform(0.3, 0.7) + rng.uniform(0.0, 0.2, size=3), 0.0, 1.0)
    return np.stack([a, b])  # (2, 3)


# ----------------------------------------------------------------------------- ray casting


def _intersect(p: Primitive, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter t (inf where missed) and world normal for rays o + t d.  d: (P, 3)."""
    P = d.shape[0]
    t = np.full(P, np.inf)
    n = np.zeros((P, 3))
    if p.kind == "plane":
        denom = d @ p.size  # (P,)
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = ((p.center - o) @ p.size) / denom  # (P,)
        hit = (denom < -1e-12) & (tt > 1e-6)  # front side only
        t[hit] = tt[hit]
        n[:] = p.size
    elif p.kind == "sphere":
        oc = o - p.center  # (3,)
        a = np.einsum("pi,pi->p", d, d)  # (P,)
        b = d @ oc  # (P,)
        c = oc @ oc - p.size[0] ** 2
        disc = b * b - a * c  # (P,)
        hit = disc > 0
        tt = (-b[hit] - np.sqrt(disc[hit])) / a[hit]
        ok = tt > 1e-6
        idx = np.flatnonzero(hit)[ok]
        t[idx] = tt[ok]
        n[idx] = (o + t[idx, None] * d[idx] - p.center) / p.size[0]  # (P', 3) outward unit normals
    elif p.kind == "box":  # slab test in the box frame
        ol = (o - p.center) @ p.R  # (3,)
        dl = d @ p.R  # (P, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-p.size - ol) / dl  # (P, 3)
            t2 = (p.size - ol) / dl  # (P, 3)
        tmin = np.fmax.reduce(np.minimum(t1, t2), axis=1)  # (P,) NaN-ignoring max (0/0 on a slab edge)
        tmax = np.fmin.reduce(np.maximum(t1, t2), axis=1)  # (P,)
        hit = (tmax >= tmin) & (tmin > 1e-6)
        t[hit] = tmin[hit]
        axis = np.argmax(np.minimum(t1, t2), axis=1)  # (P,) face the ray enters through
        nl = np.zeros((P, 3))
        nl[np.arange(P), axis] = -np.sign(dl[np.arange(P), axis])
        n = nl @ p.R.T  # (P, 3)
    else:
        raise ValueError(f"expected primitive kind 'plane' | 'sphere' | 'box', got {p.kind!r}")
    return t, n


def _texture(p: Primitive, X: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-colour 3D checker pattern, a function of the surface point in the object frame."""
    q = (X - p.center) @ p.R * p.freq  # (P, 3) object-frame coordinates in texture units
    if p.kind != "sphere":  # flat faces: drop the coordinate along the face normal (it sits on a cell edge)
        axis = np.argmax(np.abs(n @ p.R), axis=1)  # (P,)
        q[np.arange(len(q)), axis] = 0.5
    phase = (np.floor(q[:, 0]) + np.floor(q[:, 1]) + np.floor(q[:, 2])) % 2  # (P,)
    return p.colors[phase.astype(int)]  # (P, 3)


def render(prims: list[Primitive], K: np.ndarray, cam_to_world: np.ndarray, image_size: tuple[int, int],
           max_depth: float = 12.0) -> dict[str, np.ndarray]:
    """Ray-cast one view. Returns float32 rgb (H,W,3), depth (H,W), pts3d (H,W,3) in the camera frame, bool mask."""
    H, W = check_image_size(image_size)
    d_cam = pixel_rays(K, (H, W)).reshape(-1, 3)  # (P, 3), P = H*W, d_z = 1
    R, o = cam_to_world[:3, :3], cam_to_world[:3, 3]
    d_world = d_cam @ R.T  # (P, 3), same ray parameter t as in the camera frame
    hits = [_intersect(p, o, d_world) for p in prims]
    ts = np.stack([h[0] for h in hits])  # (n_prims, P), inf where missed
    first = ts.argmin(axis=0)  # (P,) nearest primitive (the earlier one on a tie)
    pix = np.arange(H * W)
    t = ts[first, pix]  # (P,)
    normal = np.stack([h[1] for h in hits])[first, pix]  # (P, 3)
    color = np.zeros((H * W, 3))
    for k, p in enumerate(prims):  # texture each pixel once, with the primitive it sees
        sel = (first == k) & np.isfinite(t)  # (P,)
        if sel.any():
            color[sel] = _texture(p, o + t[sel, None] * d_world[sel], normal[sel])  # (P', 3)
    mask = t <= max_depth  # (P,)
    light = np.array([0.4, -1.0, -0.5]) / np.linalg.norm([0.4, -1.0, -0.5])
    shade = 0.45 + 0.55 * np.clip(normal @ light, 0.0, 1.0)  # (P,)
    sky = np.array([0.55, 0.7, 0.9]) * (0.8 + 0.2 * (d_cam[:, 1:2] - d_cam[:, 1].min()) / np.ptp(d_cam[:, 1]))  # (P, 3)
    rgb = np.where(mask[:, None], color * shade[:, None], sky)  # (P, 3)
    depth = np.where(mask, t, 0.0)  # (P,)
    pts = d_cam * depth[:, None]  # (P, 3) = depth * K^-1 [u, v, 1]
    return {"rgb": rgb.reshape(H, W, 3).astype(np.float32), "depth": depth.reshape(H, W).astype(np.float32),
            "pts3d": pts.reshape(H, W, 3).astype(np.float32), "mask": mask.reshape(H, W)}


# ----------------------------------------------------------------------------- dataset


class SyntheticScenes:
    """Seeded, indexable collection of two-view scenes rendered on the fly.

    scenes[i] -> dict of torch tensors:
      img1, img2 (3, H, W) in [-1, 1]; depth1, depth2 (H, W); pts1, pts2 (H, W, 3) each in its own
      camera frame; pts2_in_1 (H, W, 3); mask1, mask2 (H, W) bool; K (3, 3); pose_2to1 (4, 4).
    """

    def __init__(self, n_scenes: int, image_size: tuple[int, int] = (64, 96), seed: int = 0, focal: float | None = None,
                 max_depth: float = 12.0, baseline: tuple[float, float] = (0.15, 0.45), max_yaw_deg: float = 8.0):
        self.n_scenes = positive_int("n_scenes", n_scenes)
        self.image_size = check_image_size(image_size)
        self.seed = int(seed)
        self.focal = float(focal) if focal is not None else 0.9 * self.image_size[1]
        self.max_depth = max_depth
        self.baseline = baseline
        self.max_yaw = math.radians(max_yaw_deg)
        self.K = intrinsics(self.image_size, self.focal)  # (3, 3)

    def __len__(self) -> int:
        return self.n_scenes

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n_scenes:
            raise IndexError(f"expected scene index in [0, {self.n_scenes}), got {i}")
        rng = np.random.default_rng([self.seed, i])
        prims, _ = random_scene(rng)
        R1 = rotation(yaw=rng.uniform(-0.15, 0.15), pitch=-rng.uniform(0.05, 0.3), roll=rng.uniform(-0.05, 0.05))
        T1 = rigid(R1, np.zeros(3))  # camera-1-to-world (4, 4)
        side = rng.choice([-1.0, 1.0]) * rng.uniform(*self.baseline)
        t12 = np.array([side, rng.uniform(-0.05, 0.05), rng.uniform(-0.15, 0.15)])  # camera 2 centre in camera-1 frame
        R12 = rotation(yaw=-np.sign(side) * rng.uniform(0.0, self.max_yaw), pitch=rng.uniform(-0.03, 0.03))
        pose_2to1 = rigid(R12, t12)  # X1 = R12 X2 + t12
        T2 = T1 @ pose_2to1  # camera-2-to-world
        v1 = render(prims, self.K, T1, self.image_size, self.max_depth)
        v2 = render(prims, self.K, T2, self.image_size, self.max_depth)
        pose = torch.from_numpy(pose_2to1).float()  # (4, 4)
        pts2 = torch.from_numpy(v2["pts3d"])  # (H, W, 3)
        pts2_in_1 = torch.from_numpy((pose_2to1[:3, :3] @ v2["pts3d"].astype(np.float64)[..., None])[..., 0]
                                     + pose_2to1[:3, 3]).float() * torch.from_numpy(v2["mask"])[..., None]  # (H, W, 3)
        return {
            "img1": torch.from_numpy(v1["rgb"]).permute(2, 0, 1) * 2 - 1,  # (3, H, W)
            "img2": torch.from_numpy(v2["rgb"]).permute(2, 0, 1) * 2 - 1,  # (3, H, W)
            "depth1": torch.from_numpy(v1["depth"]), "depth2": torch.from_numpy(v2["depth"]),  # (H, W)
            "pts1": torch.from_numpy(v1["pts3d"]), "pts2": pts2, "pts2_in_1": pts2_in_1,  # (H, W, 3)
            "mask1": torch.from_numpy(v1["mask"]), "mask2": torch.from_numpy(v2["mask"]),  # (H, W)
            "K": torch.from_numpy(self.K).float(), "pose_2to1": pose,  # (3, 3), (4, 4)
        }

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """Stack scenes into a batch: every entry gets a leading (B,) dimension."""
        items = [self[int(i)] for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}  # (B, ...)


# ----------------------------------------------------------------------------- augmentation


def swap_views(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same scenes with the views exchanged: view 2 becomes the reference camera.

    pts2_in_1 of the result is the old view 1's point map in the old camera 2's frame (X2 = R^T (X1 - t)),
    and pose_2to1 the inverse transform; everything else is swapped pairwise.
    """
    R, t = batch["pose_2to1"][:, :3, :3], batch["pose_2to1"][:, :3, 3]  # (B, 3, 3), (B, 3)
    inv = torch.zeros_like(batch["pose_2to1"])  # (B, 4, 4)
    inv[:, :3, :3], inv[:, 3, 3] = R.transpose(1, 2), 1.0
    inv[:, :3, 3] = -(R.transpose(1, 2) @ t[..., None])[..., 0]  # (B, 3): -R^T t
    out = dict(batch)
    for a, b in [("img1", "img2"), ("depth1", "depth2"), ("pts1", "pts2"), ("mask1", "mask2")]:
        out[a], out[b] = batch[b], batch[a]
    out["pts2_in_1"] = transform_points(inv, batch["pts1"]) * batch["mask1"][..., None]  # (B, H, W, 3)
    out["pose_2to1"] = inv
    return out


def flip_views(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Both views mirrored left-right: a valid scene of a mirrored world with the same K.

    Column j goes to W-1-j and, because the principal point is the image centre, x goes to -x in both
    camera frames; the pose becomes S T S with S = diag(-1, 1, 1, 1).
    """
    S = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=batch["pose_2to1"].dtype))  # (4, 4)
    sx = torch.tensor([-1.0, 1.0, 1.0])  # (3,)
    out = dict(batch)
    for k in ("img1", "img2", "depth1", "depth2", "mask1", "mask2"):
        out[k] = batch[k].flip(-1)  # (B, 3, H, W) or (B, H, W): flip W
    for k in ("pts1", "pts2", "pts2_in_1"):
        out[k] = batch[k].flip(-2) * sx.to(batch[k])  # (B, H, W, 3): flip W, negate x
    out["pose_2to1"] = S @ batch["pose_2to1"] @ S  # (B, 4, 4)
    return out


def augment(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per scene, with probability 1/2 each (drawn from `generator`): exchange the views, mirror left-right."""
    B = batch["img1"].shape[0]
    out = batch
    for op in (swap_views, flip_views):
        pick = torch.rand(B, generator=generator) < 0.5  # (B,)
        changed = op(out)
        out = {k: torch.where(pick.view(-1, *[1] * (v.dim() - 1)), changed[k], v) for k, v in out.items()}
    return out
