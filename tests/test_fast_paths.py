"""The fast paths give the plain paths' numbers: the level-batched IK against a joint-by-joint walk, the small-batch
quaternion conversion against roma, chunked skinning against smplx's lbs, the fused network against its modules,
the recorded low-latency solver against solve, and chunk workers against one piece."""

import pytest
import roma
import torch
from conftest import posed_skeleton, random_pose, t_pose_skeleton
from smplx.lbs import lbs

from lib.core.smpl.config import get_cfg
from lib.engine.build import build_body_model, build_network, build_solver
from lib.engine.evaluator import MESH_CHUNK, evaluate_batch
from lib.engine.metrics import mpve
from lib.engine.threads import join_batches, map_chunks
from lib.kinematics.rotations import minimal_rotation, rotation_about_axis, unitquat_to_rotmat
from lib.kinematics.skeleton import two_direction_rotation
from lib.models.body_model import SKIN_CHUNK
from lib.models.pan import PartAwareNetwork
from lib.solver.analytic_ik import solve_rotations
from lib.solver.low_latency import LowLatencySolver
from lib.solver.twist import twist_angles


def joint_by_joint_rotations(tree, rest, target, phi=None):
    """METHOD.md section 5 written plainly, one joint at a time (the structure before the level batching)."""
    batch = rest.shape[0]
    local = [torch.eye(3, dtype=rest.dtype).expand(batch, 3, 3)] * tree.num_pose_joints
    glob = {tree.root: two_direction_rotation(tree, tree.root, rest, target)}
    local[tree.root] = glob[tree.root]
    for level in tree.levels:
        for j in level:
            p = tree.parents[j]
            if j in tree.ik_child:
                c = tree.ik_child[j]
                to_parent = glob[p].transpose(-1, -2)
                rest_bone = rest[:, c] - rest[:, j]
                rotation = minimal_rotation(rest_bone, (to_parent @ (target[:, c] - target[:, j])[..., None])[..., 0])
                if j in tree.relative_joints:
                    posed_parent = (to_parent @ (target[:, j] - target[:, p])[..., None])[..., 0]
                    rotation = minimal_rotation(rest[:, j] - rest[:, p], posed_parent).transpose(-1, -2) @ rotation
                if phi is not None:
                    rotation = rotation @ rotation_about_axis(rest_bone, phi[:, j, 0], phi[:, j, 1])
                local[j] = rotation
            elif j in tree.two_direction_by_joint:
                local[j] = two_direction_rotation(tree, j, rest, target, glob[p])
            if j < tree.num_pose_joints:
                glob[j] = glob[p] @ local[j]
    return torch.stack(local, dim=1)


@pytest.mark.parametrize("twisted", [False, True], ids=["analyik", "mixik"])
def test_level_batched_ik_equals_joint_by_joint_walk(tree, twisted):
    rest = t_pose_skeleton(tree)[None].expand(6, -1, -1)
    target = posed_skeleton(tree, random_pose(tree, 6, seed=3), rest)
    phi = None
    if twisted:
        angles = torch.randn(6, tree.num_pose_joints, generator=torch.Generator().manual_seed(4), dtype=rest.dtype)
        phi = torch.stack([angles.cos(), angles.sin()], dim=-1)
    expected = joint_by_joint_rotations(tree, rest, target, phi)
    assert torch.allclose(solve_rotations(tree, rest, target, phi), expected, atol=1e-12)


@pytest.mark.parametrize("count", [5, 50_000])  # below and above the size where roma's formula takes over
def test_quaternion_conversion_equals_roma(count):
    quat = roma.random_unitquat(count, dtype=torch.float64)
    assert torch.allclose(unitquat_to_rotmat(quat), roma.unitquat_to_rotmat(quat), atol=1e-14)


@pytest.fixture(scope="module")
def open_smpl():
    torch.set_num_threads(1)
    cfg = get_cfg(None, [])
    body = build_body_model(cfg, torch.device("cpu"))
    return body, build_solver(cfg, body)


def test_chunked_skinning_equals_smplx_lbs(open_smpl):
    body, _ = open_smpl
    batch = 3 * SKIN_CHUNK + 1
    gen = torch.Generator().manual_seed(0)
    pose, betas = torch.randn(batch, 24, 3, generator=gen) * 0.5, torch.randn(batch, 10, generator=gen)
    vertices, joints = lbs(
        betas,
        pose.reshape(batch, -1),
        body.v_template,
        body.shapedirs,
        body.posedirs,
        body.J_regressor,
        body.parents,
        body.lbs_weights,
    )
    out = body(pose, betas)
    assert torch.allclose(out.vertices, vertices, atol=1e-5) and torch.allclose(out.joints, joints, atol=1e-5)
    shared = body.pose_shaped(pose, body.shaped(betas))
    assert torch.equal(shared.vertices, out.vertices)


def _randomised_network(tree, seed=0):
    network = PartAwareNetwork(tree)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point():
                values = (
                    torch.rand(tensor.shape, generator=gen) + 0.5
                    if "running_var" in name
                    else torch.randn(tensor.shape, generator=gen) * 0.2
                )
                tensor.copy_(values)
    return network.eval()


def test_fused_network_equals_its_modules_and_follows_new_weights(tree):
    network = _randomised_network(tree).double()  # float64: the folding itself must be exact
    joints = torch.randn(7, tree.num_joints, 3, dtype=torch.float64) * 0.3
    betas = torch.randn(7, 10, dtype=torch.float64)
    for seed in (0, 1):
        if seed:
            network.load_state_dict(_randomised_network(tree, seed).double().state_dict())
        with torch.enable_grad():  # the modules' own path
            expected = network(joints, betas)
        with torch.no_grad():  # the fused inference path
            fused = network(joints, betas)
        for a, b in zip(fused, expected, strict=True):
            assert torch.allclose(a, b, atol=1e-10)


def _bfloat16_reference(network, joints, betas):
    """The module's computation in float32 with every product's operands and result rounded to bfloat16 (the weights
    after folding in their BatchNorm): what the bfloat16 inference path must compute, up to the order of its sums."""

    def rounded(x):
        return x.to(torch.bfloat16).float()

    def dense(x, linear, norm, prelu):
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        weight, bias = linear.weight * scale[:, None], (linear.bias - norm.running_mean) * scale + norm.bias
        return torch.nn.functional.prelu(rounded(rounded(x) @ rounded(weight).T) + bias, prelu.weight)

    out = []
    for part in network.tree.parts:
        mlp = network.branch(part).mlp
        pos = dense(joints[:, list(part.joints)].flatten(1), *mlp.pos_emd[:3])
        x = torch.cat([pos, dense(betas, *mlp.beta_emd[:3])], dim=1)
        for block in mlp.block[:3]:
            x = x + dense(dense(x, *block.block[:3]), *block.block[4:7])
        head = mlp.block[3]
        phi = (rounded(rounded(x) @ rounded(head.weight).T) + head.bias).view(-1, len(part.twist_joints), 2)
        out.append(phi / (phi.norm(dim=-1, keepdim=True) + 1e-8))
    return out


def test_bfloat16_products_round_only_the_product_operands(tree):
    network = _randomised_network(tree)
    gen = torch.Generator().manual_seed(3)
    joints = torch.randn(64, tree.num_joints, 3, generator=gen) * 0.3
    joints = joints - joints[:, :1]
    betas = torch.randn(64, 10, generator=gen)
    with torch.no_grad():
        exact = network(joints, betas)
        network.set_matmul_precision("bfloat16")
        fast = network(joints, betas)
        expected = _bfloat16_reference(network, joints, betas)
        float64 = network.double()(joints.double(), betas.double())  # float64 input: the setting does not apply
        network.float().set_matmul_precision("float32")
        again = network(joints, betas)
    for got, want, full, plain, back in zip(fast, expected, float64, exact, again, strict=True):
        # the same products (another order of the sums can flip a rounding: far below the gap to float32's)
        assert (got - want).abs().max() < min(5e-3, 0.1 * (got - plain).abs().max())
        assert not torch.allclose(got, plain, atol=1e-4)  # ... which are not float32's
        assert torch.allclose(full.float(), plain, atol=1e-4)
        assert torch.equal(back, plain)  # switching back rebuilds the float32 weights
    with pytest.raises(ValueError, match="matmul precision 'float16'"):
        network.set_matmul_precision("float16")


def test_config_sets_the_matmul_precision():
    cpu = torch.device("cpu")
    assert build_network(get_cfg(None, []), cpu).matmul_precision == "float32"
    cfg = get_cfg(None, ["MODEL.MLP.MATMUL_PRECISION", "bfloat16"])
    assert build_network(cfg, cpu).matmul_precision == "bfloat16"


@pytest.mark.parametrize("dropout", [0.0, 0.35])
def test_config_sets_the_dropout_of_every_dense_layer(dropout):
    cfg = get_cfg(None, ["MODEL.MLP.DROPOUT", dropout])
    network = build_network(cfg, torch.device("cpu"))
    rates = [m.p for m in network.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(rates) == 3 * 8 and set(rates) == {dropout}  # 3 parts x (2 embeddings + 3 blocks of 2 layers)
    assert get_cfg(None, []).MODEL.MLP.DROPOUT == 0.2  # the paper's


def test_low_latency_solver_equals_solve(open_smpl):
    body, solver = open_smpl
    network = _randomised_network(solver.tree)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        joints = body(torch.randn(3, 24, 3, generator=gen) * 0.4, torch.randn(3, 10, generator=gen)).joints
        fast = LowLatencySolver(solver, network)
        for batch in (1, 3, 1):
            expected, got = solver.solve(joints[:batch], network), fast.solve(joints[:batch])
            for name in ("betas", "refined", "rotmats", "analytic_rotmats", "translation"):
                assert torch.allclose(getattr(got, name), getattr(expected, name), atol=1e-5), name
            assert got.method == "mixik" and len(got.phis) == len(expected.phis) == len(solver.tree.parts)
            for phi, want in zip(got.phis, expected.phis, strict=True):
                assert torch.allclose(phi, want, atol=1e-5)
        assert len(fast._recorded) == 2  # one recording per batch size
        plain = LowLatencySolver(solver).solve(joints[:1])  # no network: AnalyIK, no twists
        assert plain.method == "analyik" and plain.phis is None
        assert torch.allclose(plain.rotmats, solver.solve(joints[:1]).rotmats, atol=1e-5)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_chunk_workers_give_the_same_solution(dtype, atol):
    """Chunks change only the matrix products' blocking: equal to rounding (float32: the network's GEMMs)."""
    cfg = get_cfg(None, [])
    body = build_body_model(cfg, torch.device("cpu"), dtype=dtype)
    solver = build_solver(cfg, body)
    network = _randomised_network(solver.tree).to(dtype)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        pose, betas = torch.randn(40, 24, 3, generator=gen) * 0.4, torch.randn(40, 10, generator=gen)
        joints = body(pose.to(dtype), betas.to(dtype)).joints
        whole = solver.solve(joints, network)
        chunked = map_chunks(lambda j: solver.solve(j, network), (joints,), workers=3, min_chunk=8)
    for name in ("betas", "rest", "refined", "rotmats", "analytic_rotmats", "translation"):
        assert torch.allclose(getattr(chunked, name), getattr(whole, name), atol=atol), name
    assert all(torch.allclose(a, b, atol=atol) for a, b in zip(chunked.phis, whole.phis, strict=True))
    assert chunked.method == whole.method
    assert join_batches([{"a": torch.ones(2)}, {"a": torch.zeros(1)}])["a"].tolist() == [1, 1, 0]


def test_evaluator_meshes_equal_plain_forwards(open_smpl):
    body, solver = open_smpl
    tree = solver.tree
    batch = MESH_CHUNK + 5
    gen = torch.Generator().manual_seed(3)
    pose, betas = torch.randn(batch, 24, 3, generator=gen) * 0.4, torch.randn(batch, 10, generator=gen)
    angles = twist_angles(tree, body.rest_joints(betas), roma.rotvec_to_rotmat(pose))
    metrics = evaluate_batch(body, solver, {"pose": pose, "betas": betas, "twist_angle": angles})
    with torch.no_grad():
        truth = body(pose, betas)
        solution = solver.solve(truth.joints - truth.joints[:, :1])
        expected = mpve(body(solution.analytic_rotmats, solution.betas).vertices, truth.vertices)
    assert torch.allclose(metrics["analyik_mpve"], expected, atol=1e-3)  # mm
