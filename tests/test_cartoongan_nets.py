"""CartoonGAN building blocks: the translator (generator), the patch discriminator, and the VGG19
and ResNet-101 feature networks of the content losses, with their weight converters.

References:
* tests/fixtures/cartoongan (its README says how it was made): outputs of the
  CartoonGAN authors' published generator (Yijunmaverick/CartoonGAN-Test-Pytorch-Torch
  `Transformer`) with the seeded weights of its `recipe.py`;
* tests/fixtures/feature_nets/vgg19.* (see that folder's README): torchvision
  `vgg19().features` conv4_4 / relu4_4 with the recipe weights;
* ResNet-101: torchvision is not installed here (its wheel would pull a CUDA torch), so this file
  writes the torchvision ResNet-101 (v1.5 `Bottleneck`, the torchvision state-dict names) in
  torch, gives it random weights and BatchNorm statistics, saves its state dict with
  `torch.save`, converts it with `toonjax convert-features resnet101` and compares every stage;
* parameter counts: the same generator / discriminator layouts written in torch here.

Everything runs at small sizes (ResNet-101 at 64x64, VGG19 at 24x40) so the file takes under a
minute on 2 busy cores; each big network is compiled once per input shape.
"""

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toonjax import cli
from toonjax.convert import resnet as cres
from toonjax.convert import vgg as cv
from toonjax.convert.cartoongan import authors_param_name
from toonjax.errors import ConvertError
from toonjax.nets import resnet, vgg
from toonjax.nets.stylegan2 import flatten_names, unflatten_names
from toonjax.nets.translator import (
    PatchDiscriminator,
    Translator,
    conv_transpose2d,
    count_params,
)

torch = pytest.importorskip("torch")
tnn = torch.nn

FIX = Path(__file__).parent / "fixtures"
FEAT = FIX / "feature_nets"
CG = FIX / "cartoongan"

sys.path.insert(0, str(FEAT))
import recipe as feat_recipe  # noqa: E402


def nhwc(x):
    return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


def rel_err(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def run_compiled(fn, *args):
    """`jax.jit(fn)(*args)` at full float32 matmul precision, compiled without XLA's backend
    (LLVM) optimisations: on 2 cores that halves the compile time of the big networks here
    (ResNet-101: 4.5 s instead of 9.3 s) and costs little at these input sizes."""
    with jax.default_matmul_precision("highest"):
        lowered = jax.jit(fn).lower(*args)
    return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})(*args)


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------------------------
# Translator and discriminator.


# CartoonGAN's up-sampling; and stride 3 with output padding, where phase 2's input is cropped.
@pytest.mark.parametrize("k,s,p,op", [(3, 2, 1, 1), (4, 3, 3, 2)])
def test_conv_transpose_matches_torch(k, s, p, op):
    """Values and both gradients against torch."""
    rng = np.random.default_rng(k + s + p + op)
    x = torch.from_numpy(rng.standard_normal((2, 3, 5, 7)).astype(np.float32)).requires_grad_()
    w = torch.from_numpy(rng.standard_normal((3, 4, k, k)).astype(np.float32)).requires_grad_()
    y = tnn.functional.conv_transpose2d(x, w, stride=s, padding=p, output_padding=op)
    dy = torch.from_numpy(rng.standard_normal(y.shape).astype(np.float32))
    (y * dy).sum().backward()

    def f(x, w):
        out = conv_transpose2d(x, w, s, p, op)
        return jnp.sum(out * nhwc(dy.numpy())), out

    grad = jax.grad(f, (0, 1), has_aux=True)  # compiled: eager takes 4 s a case
    (dx, dw), out = run_compiled(grad, nhwc(x.detach()), jnp.asarray(w.detach()))
    assert rel_err(np.asarray(out).transpose(0, 3, 1, 2), y.detach().numpy()) < 1e-6
    assert rel_err(np.asarray(dx).transpose(0, 3, 1, 2), x.grad.numpy()) < 1e-6
    assert rel_err(dw, w.grad.numpy()) < 1e-6


@pytest.mark.parametrize("norm", ["instance", "batch", "layer"])
@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_translator_and_discriminator_shapes(norm, padding):
    # 20x36: multiples of 4 whose quarter (5x9) is odd, where padding/cropping slips would show.
    x = jnp.zeros((2, 20, 36, 3))
    G = Translator(base_channels=8, num_res_blocks=2, norm=norm, padding=padding)
    D = PatchDiscriminator(base_channels=4, norm=norm, padding=padding)
    for net, want in ((G, (2, 20, 36, 3)), (D, (2, 5, 9, 1))):
        v = jax.eval_shape(net.init, jax.random.key(0), x)
        assert ("batch_stats" in v) == (norm == "batch")
        mutable = ["batch_stats"] if norm == "batch" else False
        y = jax.eval_shape(
            lambda v, x, net=net, mutable=mutable: net.apply(v, x, mutable=mutable), v, x
        )
        y = y[0] if norm == "batch" else y
        assert y.shape == want
    with pytest.raises(ValueError, match="multiples of 4"):
        jax.eval_shape(G.init, jax.random.key(0), jnp.zeros((1, 18, 36, 3)))


def numpy_variables(net, x, seed: int = 0):
    """Random variables of `net` built in numpy from `eval_shape`: compiling `net.init` (one
    random-number program per parameter) takes 20-30 s on 2 cores, the forward pass 3 s."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(net.init, jax.random.key(0), x)

    def make(path, s):
        leaf = path[-1].key
        if leaf == "var":
            return jnp.ones(s.shape)
        if leaf == "weight":
            return jnp.asarray(rng.standard_normal(s.shape) / math.sqrt(np.prod(s.shape[1:])))
        return jnp.asarray(1.0 * (leaf == "scale") + 0.1 * rng.standard_normal(s.shape))

    return jax.tree_util.tree_map_with_path(make, shapes)


def test_translator_runs_on_odd_quarter_sizes():
    G = Translator(base_channels=8, num_res_blocks=1)  # instance norm, reflection padding
    D = PatchDiscriminator(base_channels=4, norm="batch")
    x = jax.random.uniform(jax.random.key(1), (2, 20, 28, 3), minval=-1, maxval=1)
    vg, vd = numpy_variables(G, x), numpy_variables(D, x)

    def run(vg, vd, x):  # one program
        _, upd = D.apply(vd, x, train=True, mutable=["batch_stats"])
        return G.apply(vg, x), upd["batch_stats"], D.apply({**vd, **upd}, x, train=False)

    y, stats, d = run_compiled(run, vg, vd, x)
    assert y.shape == x.shape and d.shape == (2, 5, 7, 1)
    assert bool(jnp.all(jnp.abs(y) <= 1)) and bool(jnp.all(jnp.isfinite(d)))
    assert float(jnp.std(y)) > 1e-3  # not a constant image
    # Batch norm: training updates the running statistics (eval mode then reads them).
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), vd["batch_stats"], stats)
    assert max(jax.tree.leaves(moved)) > 0


def torch_translator(base=64, num_down=2, num_res=8, affine=True):
    """The CartoonGAN generator layout in torch (znxlwm's `generator`, per-channel affine IN)."""

    def norm(c):
        return tnn.InstanceNorm2d(c, affine=affine)

    layers = [tnn.Conv2d(3, base, 7, 1, 3), norm(base), tnn.ReLU()]
    c = base
    for _ in range(num_down):
        layers += [tnn.Conv2d(c, 2 * c, 3, 2, 1), tnn.Conv2d(2 * c, 2 * c, 3, 1, 1)]
        layers += [norm(2 * c), tnn.ReLU()]
        c *= 2
    for _ in range(num_res):
        layers += [tnn.Conv2d(c, c, 3, 1, 1), norm(c), tnn.Conv2d(c, c, 3, 1, 1), norm(c)]
    for _ in range(num_down):
        layers += [tnn.ConvTranspose2d(c, c // 2, 3, 2, 1, 1), tnn.Conv2d(c // 2, c // 2, 3, 1, 1)]
        layers += [norm(c // 2), tnn.ReLU()]
        c //= 2
    layers += [tnn.Conv2d(c, 3, 7, 1, 3), tnn.Tanh()]
    return tnn.Sequential(*layers)


def torch_discriminator(base=32, affine=True):
    """znxlwm's CartoonGAN `discriminator` (without the final sigmoid, which has no params)."""
    b = base
    lrelu = tnn.LeakyReLU(0.2)
    return tnn.Sequential(
        tnn.Conv2d(3, b, 3, 1, 1), lrelu,
        tnn.Conv2d(b, 2 * b, 3, 2, 1), lrelu,
        tnn.Conv2d(2 * b, 4 * b, 3, 1, 1), tnn.InstanceNorm2d(4 * b, affine=affine), lrelu,
        tnn.Conv2d(4 * b, 4 * b, 3, 2, 1), lrelu,
        tnn.Conv2d(4 * b, 8 * b, 3, 1, 1), tnn.InstanceNorm2d(8 * b, affine=affine), lrelu,
        tnn.Conv2d(8 * b, 8 * b, 3, 1, 1), tnn.InstanceNorm2d(8 * b, affine=affine), lrelu,
        tnn.Conv2d(8 * b, 1, 3, 1, 1),
    )  # fmt: skip


@pytest.mark.parametrize("affine", [True, False])
def test_param_counts_match_torch(affine):
    x = jnp.zeros((1, 32, 32, 3))
    for net, ref in (
        (Translator(affine=affine), torch_translator(affine=affine)),
        (PatchDiscriminator(affine=affine), torch_discriminator(affine=affine)),
    ):
        want = sum(p.numel() for p in ref.parameters())
        assert count_params(jax.eval_shape(net.init, jax.random.key(0), x)) == want
    if affine:  # the numbers the report quotes
        assert sum(p.numel() for p in torch_translator().parameters()) == 11_129_667
        assert sum(p.numel() for p in torch_discriminator().parameters()) == 1_129_665


def test_translator_matches_cartoongan_authors_generator():
    # The cartoongan fixture's recipe.py (a module name the feature_nets recipe also has).
    spec = importlib.util.spec_from_file_location("cartoongan_recipe", CG / "recipe.py")
    cg_recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cg_recipe)
    meta = json.loads((CG / "cartoongan_transformer_8100.json").read_text())
    sd = cg_recipe.state_dict(meta["seed"], meta["state_dict"])
    params = unflatten_names({authors_param_name(k): v for k, v in sd.items()})
    G = Translator(norm="instance", norm_eps=1e-9, padding="reflect")
    want_shapes = flatten_names(
        jax.eval_shape(G.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    )
    assert {k: v.shape for k, v in flatten_names(params).items()} == {
        k[len("params.") :]: v.shape for k, v in want_shapes.items()
    }
    ref = np.load(CG / "cartoongan_transformer_8100.npz")
    for case in ("square", "nonsquare"):
        y = run_compiled(lambda p, x: G.apply({"params": p}, x), params, nhwc(ref["x_" + case]))
        err = rel_err(np.asarray(y).transpose(0, 3, 1, 2), ref["y_" + case])
        print(f"cartoongan transformer {case}: relative error {err:.2e}")
        assert err < 2e-5


# ------------------------------------------------------------------------------------------------
# VGG19.


def test_vgg19_matches_torchvision(tmp_path, capsys):
    meta = json.loads((FEAT / "vgg19.json").read_text())
    sd = feat_recipe.state_dict_from_json(FEAT / "vgg19.json")
    assert feat_recipe.state_dict_digest(sd) == meta["state_dict_sha256"]
    full = {k: torch.from_numpy(v) for k, v in sd.items()}
    full["classifier.0.weight"] = torch.zeros(8, 4)  # torchvision's file has a classifier
    # torchvision's vgg19-dcbb9e9d.pth is a legacy (non-zip) torch.save file.
    torch.save(full, tmp_path / "vgg19.pth", _use_new_zipfile_serialization=False)
    out = tmp_path / "w" / "vgg19.npz"
    assert cli.main(["convert-features", "vgg19", str(tmp_path / "vgg19.pth"), str(out)]) == 0
    capsys.readouterr()
    ref = np.load(FEAT / "vgg19.npz")
    x = vgg.imagenet_normalize(nhwc(ref["x01"]))
    assert rel_err(np.asarray(x).transpose(0, 3, 1, 2), ref["x"]) < 1e-6
    net, params = cv.load_vgg19(out, taps=("conv4_4", "relu4_4"), input_range=(0, 1))
    assert max(int(k.split(".")[1]) for k in flatten_names(params["params"])) == 25  # conv4_4
    taps = run_compiled(net.apply, params, nhwc(ref["x01"]))
    for name in ("conv4_4", "relu4_4"):
        err = rel_err(np.asarray(taps[name]).transpose(0, 3, 1, 2), ref[name])
        print(f"vgg19 {name}: relative error {err:.2e}")
        assert err <= 1e-5


# ------------------------------------------------------------------------------------------------
# ResNet-101.


class _TorchBottleneck(tnn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        out = 4 * width
        self.conv1 = tnn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = tnn.Conv2d(width, out, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(cin, out, 1, stride, bias=False), tnn.BatchNorm2d(out)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class _TorchResNet(tnn.Module):
    """torchvision's resnet101() structure and state-dict names, written out."""

    def __init__(self, blocks=(3, 4, 23, 3)):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), 1):
            layer = []
            for b in range(n):
                layer.append(_TorchBottleneck(cin, width, (1 if i == 1 else 2) if b == 0 else 1))
                cin = 4 * width
            setattr(self, f"layer{i}", tnn.Sequential(*layer))
        self.fc = tnn.Linear(2048, 1000)

    def forward(self, x):
        out = {"stem": torch.relu(self.bn1(self.conv1(x)))}
        x = self.maxpool(out["stem"])
        for i in range(1, 5):
            for b, block in enumerate(getattr(self, f"layer{i}")):
                x = block(x)
                out[f"layer{i}.{b}"] = x
            out[f"layer{i}"] = x
        out["logits"] = self.fc(x.mean((2, 3)))
        return out


@pytest.fixture(scope="module")
def torch_resnet101(tmp_path_factory):
    """(state-dict file, torch outputs on a 1x3x64x64 input, the input)."""
    torch.manual_seed(0)
    net = _TorchResNet().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            r = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(0.75 + 0.5 * torch.rand(t.shape, generator=gen))
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(0.1 * r)
            elif t.ndim == 1:  # BatchNorm weight; bn3 kept small so 33 residual sums stay O(1)
                t.copy_((0.2 if ".bn3." in name or "downsample" in name else 1.0) + 0.1 * r)
            else:
                t.copy_(r * math.sqrt(2.0 / (t[0].numel())))
        x = torch.rand(1, 3, 64, 64, generator=gen) * 4 - 2
        out = {k: v.numpy() for k, v in net(x).items()}
    path = tmp_path_factory.mktemp("resnet") / "resnet101-63fe2227.pth"
    # torchvision's file is a legacy (non-zip) torch.save file, num_batches_tracked included.
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    return path, out, x.numpy()


def test_resnet101_matches_torch(torch_resnet101, tmp_path, capsys):
    path, want, x = torch_resnet101
    out = tmp_path / "resnet101.npz"
    assert cli.main(["convert-features", "resnet101", str(path), str(out)]) == 0
    capsys.readouterr()
    names = ("stem", "layer1", "layer2", "layer3.3", "layer3", "layer4", "logits")
    net, variables = cres.load_resnet101(out, outputs=names)
    assert set(variables) == {"params", "batch_stats"}
    n_stats = len(flatten_names(variables["batch_stats"]))
    assert n_stats == 2 * 104  # running mean and var of all 104 BatchNorms
    got = run_compiled(net.apply, variables, nhwc(x))
    for name in names:
        g = np.asarray(got[name])
        g = g if g.ndim == 2 else g.transpose(0, 3, 1, 2)
        err = rel_err(g, want[name])
        print(f"resnet101 {name} {g.shape}: relative error {err:.2e}")
        assert err <= 1e-5, name
    # "layer3.3" is Keras' conv4_block4_out: a cut inside layer3, not its end.
    assert np.abs(want["layer3.3"] - want["layer3"]).max() > 0.1 * np.abs(want["layer3"]).max()
    with pytest.raises(ValueError, match="unknown ResNet output"):
        resnet.parse_output("layer3.23")


# ------------------------------------------------------------------------------------------------
# Converter errors: one line naming what does not fit, or the file and where it is published.


def test_converter_errors(torch_resnet101, tmp_path, capsys):
    vgg16 = feat_recipe.state_dict_from_json(FEAT / "vgg16.json")
    torch.save({k: torch.from_numpy(v) for k, v in vgg16.items()}, tmp_path / "vgg16.pth")

    def cli_error(kind, src):
        return one_line_error(capsys, ["convert-features", kind, str(src), str(tmp_path / "o.npz")])

    # Through the CLI: a VGG16 file as VGG19 (convolutions at other indices) and as ResNet-101.
    err = cli_error("vgg19", tmp_path / "vgg16.pth")
    assert "not a VGG19 state dict" in err and "unexpected features.17.bias" in err
    err = cli_error("resnet101", tmp_path / "vgg16.pth")
    assert "missing bn1.bias" in err and "conv1.weight" in err
    assert "unexpected features.0.bias" in err
    # Missing files: the file torchvision publishes, and where.
    err = cli_error("vgg19", tmp_path / "vgg19-dcbb9e9d.pth")
    assert "no such file" in err and "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in err
    err = cli_error("resnet101", tmp_path / "resnet101-63fe2227.pth")
    assert "https://download.pytorch.org/models/resnet101-63fe2227.pth" in err
    with pytest.raises(ConvertError, match="vgg19-dcbb9e9d.pth"):
        cv.load_vgg19(tmp_path / "nope.npz")

    # The library, on the state dict in memory (the CLI prints the same message on one line):
    # a ResNet-50-like file (layer3 cut to 6 blocks), a stray tensor, a wrong shape.
    sd = cres.read_weights(torch_resnet101[0], "resnet101", "a state dict", "a file")
    assert "layer1.0.bn1.num_batches_tracked" in sd  # dropped by the converter, not an error

    def lib_error(state_dict) -> str:
        with pytest.raises(ConvertError) as e:
            cres.resnet_from_state_dict(state_dict, "f.pth")
        assert "\n" not in str(e.value)
        return str(e.value)

    cut = {k: v for k, v in sd.items() if not re.match(r"layer3\.([6-9]|1\d|2\d)\.", k)}
    err = lib_error(cut)
    assert "missing layer3.6.bn1.bias" in err and "(3, 4, 6, 3) blocks per layer" in err
    assert "unexpected head.weight" in lib_error({**sd, "head.weight": np.zeros(2)})
    err = lib_error({**sd, "layer2.0.conv2.weight": np.zeros((128, 128, 1, 1))})
    assert "wrong shapes layer2.0.conv2.weight (128, 128, 1, 1) (want (128, 128, 3, 3))" in err
