"""The NAS-Bench-201 space: the benchmark's skeleton and sizes, the supernet against a naive mixed-op
reference, derivation, the benchmark's genotype strings and JSON, and the discrete network."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import batch, tiny_nb201, tiny_supernet
from gradnas.errors import GradnasError
from gradnas.relax import RELAXATIONS
from gradnas.space import build_supernet, check_genotype
from gradnas.space.darts import DartsSpaceConfig
from gradnas.space.genotype import NB201Genotype, load_genotype, save_genotype
from gradnas.space.nb201 import NB201Cell, NB201SearchCell, NB201SpaceConfig, build_nb201_network
from gradnas.space.ops import NB201_OPS, OPS, PARAMETER_FREE_OPS, ResNetBlock

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_default_supernet_skeleton_size_and_split():
    model = build_supernet("nb201", NB201SpaceConfig(), "softmax", in_channels=3, num_classes=10)
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [NB201SearchCell] * 5 + [ResNetBlock] + [NB201SearchCell] * 5 + [ResNetBlock] + [NB201SearchCell] * 5
    assert [a.shape for a in model.arch_parameters()] == [torch.Size([6, 5])]
    # per stage 5 cells x 6 edges x (1x1 + 3x3) C->C convs = 60 C^2 each, C = 16, 32, 64; stem 464; residual
    # blocks 14,464 + 57,600; last BN 128; classifier 650
    assert sum(p.numel() for p in model.weight_parameters()) == 60 * 5 * (16**2 + 32**2 + 64**2) + 464 + 14_464 \
        + 57_600 + 128 + 650 == 1_686_106
    ids_w, ids_a = {id(p) for p in model.weight_parameters()}, {id(p) for p in model.arch_parameters()}
    assert not ids_w & ids_a and ids_w | ids_a == {id(p) for p in model.parameters()}
    for cell in (layer for layer in model.layers if isinstance(layer, NB201SearchCell)):
        assert all(not m.affine for m in cell.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("in_channels,size", [(3, 32), (1, 28), (3, 16), (3, 18)])
def test_output_shapes(in_channels, size):
    x, _ = batch(2, in_channels, size)
    assert tiny_nb201(in_channels=in_channels)(x).shape == (2, 5)
    net = build_nb201_network(BEST, C=4, N=1, in_channels=in_channels, num_classes=7)
    assert net(x).shape == (2, 7)


def _reference_cell(cell, x, weights, active):
    """Naive mixed op: every (or every sampled) op of every edge computed on its own, `none` as explicit zeros,
    a separate ReLU per conv and a separate pool / skip per edge, the relaxed weight multiplied after BN."""
    states, row = [x], 0
    for i in range(1, 4):
        acc = 0
        for j in range(i):
            for k, name in enumerate(NB201_OPS):
                if active is not None and k not in active[row]:
                    continue
                if name in PARAMETER_FREE_OPS:
                    out = OPS[name](x.shape[1], 1, False)(states[j])
                else:
                    out = cell.edges[f"{i}_{j}"][name](states[j])  # the op applies its own ReLU
                acc = acc + weights[row, k] * out
            row += 1
        states.append(acc)
    return states[-1]


@pytest.mark.parametrize("relax", sorted(RELAXATIONS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_supernet_equals_naive_mixed_ops(relax, channels_last):
    model = tiny_nb201(relax, cells_per_stage=2, channels_last=channels_last, dtype=torch.float64)
    if relax == "gumbel":
        with torch.no_grad():  # `none` practically never sampled: every edge runs an op that reaches the output
            model.alpha[:, 0] = -20.0
    x, y = batch(3, 3, 8, dtype=torch.float64)
    model.relaxation.start_epoch(epoch=0, epochs=2, seed=0)
    fast = model(x)

    model.relaxation.start_epoch(epoch=0, epochs=2, seed=0)  # the same sample again
    weights, active = model.relaxation.forward_weights(model.alpha, training=True)
    h = model.stem(x)
    for layer in model.layers:
        h = _reference_cell(layer, h, weights, active) if isinstance(layer, NB201SearchCell) else layer(h)
    slow = model.classifier(F.adaptive_avg_pool2d(model.lastact(h), 1).flatten(1))

    assert torch.allclose(fast, slow, atol=1e-10)
    g_fast, = torch.autograd.grad(F.cross_entropy(fast, y), model.arch_parameters())
    g_slow, = torch.autograd.grad(F.cross_entropy(slow, y), model.arch_parameters())
    assert torch.allclose(g_fast, g_slow, atol=1e-10), (g_fast - g_slow).abs().max()
    if relax != "sigmoid":  # `none` is never computed, yet its alpha learns through softmax's normalisation
        assert (g_fast != 0).all()


def test_derivation_is_argmax_per_edge_with_none_and_ties():
    w = [[0.1, 0.2, 0.3, 0.9, 0.0],    # 1<-0: nor_conv_3x3
         [0.5, 0.1, 0.1, 0.1, 0.1],    # 2<-0: none wins, as in the benchmark
         [0.2, 0.2, 0.2, 0.2, 0.2],    # 2<-1: tie -> lowest op index (none)
         [0.0, 0.0, 0.0, 0.0, 0.7],    # 3<-0: avg_pool_3x3
         [0.1, 0.6, 0.6, 0.0, 0.0],    # 3<-1: tie between skip and 1x1 -> skip
         [0.0, 0.0, 0.8, 0.0, 0.0]]    # 3<-2: nor_conv_1x1
    g = NB201Genotype.from_weights(w)
    assert g.to_string() == "|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|"


def test_supernet_genotype_and_edge_weights():
    model = tiny_nb201("sigmoid")
    geno = model.genotype()
    expected = [NB201_OPS[k] for k in model.alpha.argmax(1).tolist()]
    assert [op for _, op in geno.edges()] == expected
    weights = model.edge_weights()["cell"]
    assert list(weights) == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    assert weights["3<-2"]["nor_conv_1x1"] == round(torch.sigmoid(model.alpha[5, 2]).item(), 6)


def test_string_json_round_trip_and_canonical_order(tmp_path):
    geno = NB201Genotype.from_string(BEST)
    assert geno.to_string() == BEST and str(geno) == BEST
    assert NB201Genotype.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|nor_conv_1x1~2|skip_connect~0|"
                                     "nor_conv_3x3~1|") == geno  # inputs in any order, one canonical string
    path = tmp_path / "g.json"
    save_genotype(geno, path)
    data = json.loads(path.read_text())
    assert data["space"] == "nb201" and data["string"] == BEST
    assert load_genotype(path) == geno and load_genotype(BEST) == geno and hash(load_genotype(path)) == hash(geno)
    derived = tiny_nb201().genotype()
    assert NB201Genotype.from_string(derived.to_string()) == derived


@pytest.mark.parametrize("text,message", [
    ("|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|", "op 'conv_7x7' is not in the space"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "node 2 must read each of nodes 0..1 once"),
    ("|none~0|+|none~0|none~1|", "has 3 nodes after its input, got 2"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~3|", "node 3 must read"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "must look like op~input"),
    ("|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "not in the space"),
])
def test_cells_outside_the_space_are_refused(text, message):
    with pytest.raises(GradnasError, match=message):
        load_genotype(text)


@pytest.mark.parametrize("content,message", [
    ({"space": "nb201", "normal": []}, "space 'nb201' needs 'nodes'"),
    ({"space": "nb201", "nodes": [[["none", 0]]], "string": BEST}, "has 3 nodes"),
    ({"space": "nb201", "nodes": NB201Genotype.from_string(BEST).to_dict()["nodes"], "string": ALL_NONE},
     "does not match"),
    ({"space": "nb201", "nodes": [["none", 0]]}, "list of \\[op name, input\\] pairs"),
    ({"space": "nasnet", "nodes": []}, "unknown space 'nasnet'"),
])
def test_bad_json(tmp_path, content, message):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(content))
    with pytest.raises(GradnasError, match=message):
        load_genotype(path)


def test_a_genotype_of_the_other_space_is_refused():
    nb = NB201Genotype.from_string(BEST)
    darts = tiny_supernet().genotype()
    assert check_genotype(nb, "nb201", NB201SpaceConfig()) is nb
    with pytest.raises(GradnasError, match="cell of the 'nb201' space, not of 'darts'; use --space nb201"):
        check_genotype(nb, "darts", DartsSpaceConfig())
    with pytest.raises(GradnasError, match="cell of the 'darts' space, not of 'nb201'"):
        check_genotype(darts, "nb201", NB201SpaceConfig())
    with pytest.raises(GradnasError, match="needs an NB-201 genotype"):
        build_nb201_network(darts)


def test_discrete_network_sizes_match_the_benchmark():
    # NAS-Bench-201 reports 1.53 MB of parameters for the all-3x3 cell and 0.073 MB for cells without convs
    # (CIFAR-10, C = 16, N = 5)
    assert sum(p.numel() for p in build_nb201_network(ALL_CONV3).parameters()) == 1_531_546
    for text in (ALL_NONE, "|skip_connect~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"):
        assert sum(p.numel() for p in build_nb201_network(text).parameters()) == 73_306
    net = build_nb201_network(BEST, C=4, N=1)
    cells = [layer for layer in net.layers if isinstance(layer, NB201Cell)]
    assert len(cells) == 3 and sorted(cells[0].edges) == ["1_0", "2_0", "2_1", "3_0", "3_1", "3_2"]
    assert all(m.affine for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(GradnasError, match="C and N must be >= 1"):
        build_nb201_network(BEST, C=0)


def test_discrete_none_edges_cut_the_input_off():
    # Every edge `none`: each cell outputs zeros, so the logits cannot depend on the image.
    net = build_nb201_network(ALL_NONE, C=4, N=1).eval()
    assert not any(cell.edges for cell in net.layers if isinstance(cell, NB201Cell))
    a, b = batch(2, 3, 16, seed=1)[0], batch(2, 3, 16, seed=2)[0]
    assert torch.equal(net(a), net(b))
    net = build_nb201_network(BEST, C=4, N=1).eval()
    assert not torch.equal(net(a), net(b))


def test_space_config_errors():
    with pytest.raises(GradnasError, match="cells_per_stage must be >= 1"):
        NB201SpaceConfig(cells_per_stage=0)
    with pytest.raises(GradnasError, match="configured by NB201SpaceConfig"):
        build_supernet("nb201", DartsSpaceConfig(), "softmax", in_channels=3, num_classes=10)
    model = tiny_nb201("sigmoid")
    assert model.relaxation.init_alpha(6, 5, torch.Generator()).eq(-math.log(4)).all()  # sigmoid(alpha) = 0.2
