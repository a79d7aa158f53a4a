"""Safe readers of foreign StyleGAN2 checkpoints (toonjax.convert) against reference fixtures.

Fixtures (`tests/fixtures/`; the README of each folder says what made them and what they hold):
`stylegan2_ada_pytorch/sg2ada_{cond16,uncond32}.pkl` (NVlabs snapshots), `sg2ada_uncond32_tf.pkl`
(the same networks as a TF StyleGAN2-ADA pickle), `rosinality/rosinality_32.pt` (a train.py
checkpoint), the JSON files listing every name and shape, and `w_avg.npz` (the W averages of
the reference npz files). None of these tests needs torch; the ones that cross-check against
`torch.load` skip without it.
"""

import datetime
import io
import json
import os
import pickle
import struct
import subprocess
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from toonjax.convert import (
    ConvertError,
    infer_rosinality_arch,
    load_nvlabs_pickle,
    load_nvlabs_tf_pickle,
    load_rosinality_pt,
    safe_pickle,
    tf_to_pytorch_names,
)
from toonjax.errors import ToonjaxError

FIX = Path(__file__).resolve().parent / "fixtures"
SG = FIX / "stylegan2_ada_pytorch"
ROS = FIX / "rosinality"
NAMES = ["sg2ada_cond16", "sg2ada_uncond32"]


def meta(path: Path) -> dict:
    return json.loads(path.read_text())


def shapes(arrays: dict) -> list:
    return [(k, list(v.shape)) for k, v in arrays.items()]


def assert_plain(obj, where="") -> None:
    """No numpy scalars, stubs or dict subclasses in what should be plain python."""
    if isinstance(obj, dict):
        assert type(obj) is dict, f"{where}: {type(obj)}"
        for k, v in obj.items():
            assert_plain(v, f"{where}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            assert_plain(v, f"{where}[{i}]")
    else:
        assert obj is None or type(obj) in (bool, int, float, str), f"{where}: {type(obj)}"


# ------------------------------------------------------------------------------------------------
# stylegan2-ada-pytorch snapshots.


@pytest.fixture(scope="module", params=NAMES)
def snapshot(request):
    name = request.param
    return name, load_nvlabs_pickle(SG / f"{name}.pkl"), meta(SG / f"{name}.json")


def test_snapshot_names_shapes_and_order_equal_the_json(snapshot):
    _, snap, m = snapshot
    assert snap.format == "pytorch"
    assert list(snap.networks) == ["G", "D", "G_ema"]
    for key, js in (("G", "G"), ("G_ema", "G"), ("D", "D")):
        net = snap.networks[key]
        assert shapes(net.params) == [(k, v) for k, v in m[f"params_{js}"].items()], key
        assert shapes(net.buffers) == [(k, v) for k, v in m[f"buffers_{js}"].items()], key
        assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in net.params.values())
        assert all(v.dtype == np.float32 for v in net.buffers.values())
        assert sum(v.size for v in net.params.values()) == m["param_counts"][js]
    assert snap.G.class_name == snap.G_ema.class_name == "Generator"
    assert snap.D.class_name == "Discriminator"


def test_snapshot_init_kwargs_equal_the_json(snapshot):
    _, snap, m = snapshot
    for key in ("G", "D"):
        expected = {k: v for k, v in m[f"{key}_kwargs"].items() if k != "class_name"}
        expected.update(m["common_kwargs"])
        net = snap.networks[key]
        assert net.init_kwargs == expected
        assert net.init_args == ()
        assert_plain(net.init_kwargs, key)
        assert_plain(net.attrs, key)
    assert snap.G_ema.init_kwargs == snap.G.init_kwargs
    assert snap.G.attrs["num_ws"] == m["num_ws"]
    assert snap.G.attrs["w_dim"] == m["G_kwargs"]["w_dim"]
    tsk = snap.training_set_kwargs
    assert_plain(tsk, "training_set_kwargs")
    assert tsk["class_name"] == "training.dataset.ImageFolderDataset"
    assert tsk["resolution"] == m["common_kwargs"]["img_resolution"]
    assert tsk["use_labels"] == (m["common_kwargs"]["c_dim"] > 0)
    assert snap.other == {}


def test_snapshot_w_avg_and_values(snapshot):
    name, snap, _ = snapshot
    w_avg = np.load(SG / "w_avg.npz")[name]
    np.testing.assert_array_equal(snap.G_ema.buffers["mapping.w_avg"], w_avg)
    # G and G_ema share buffer values but not parameters (README: G_ema = G + noise).
    for k in snap.G.buffers:
        np.testing.assert_array_equal(snap.G.buffers[k], snap.G_ema.buffers[k])
    assert not np.array_equal(
        snap.G.params["mapping.fc0.weight"], snap.G_ema.params["mapping.fc0.weight"]
    )
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64
    np.testing.assert_array_equal(snap.D.buffers["b4.conv.resample_filter"], f)
    assert snap.G.params["synthesis.b4.conv1.noise_strength"].shape == ()


def test_snapshot_augment_pipe(snapshot):
    name, snap, m = snapshot
    if m["augment_pipe"] is None:
        assert snap.augment_pipe is None
        return
    aug = snap.augment_pipe
    assert aug.class_name == "AugmentPipe"
    assert aug.init_kwargs == m["augment_pipe"]["kwargs"]
    assert aug.params == {}
    assert aug.buffers["p"].shape == ()
    assert aug.buffers["p"] == np.float32(m["augment_pipe"]["p"])


# ------------------------------------------------------------------------------------------------
# TensorFlow pickle.


@pytest.fixture(scope="module")
def tf_and_pt():
    return load_nvlabs_tf_pickle(SG / "sg2ada_uncond32_tf.pkl"), load_nvlabs_pickle(
        SG / "sg2ada_uncond32.pkl"
    )


def test_tf_pickle_reads_with_tf_names(tf_and_pt):
    tf, _ = tf_and_pt
    assert tf.format == "tensorflow" and list(tf.networks) == ["G", "D", "G_ema"]
    G, D, Gs = tf.G, tf.D, tf.G_ema  # noqa: N806
    assert (G.class_name, D.class_name, Gs.class_name) == ("G_main", "D_main", "G_main")
    assert (G.attrs["name"], D.attrs["name"], Gs.attrs["name"]) == ("G", "D", "Gs")
    assert G.attrs["version"] == 5
    assert len(G.params) == 1 + 59 + 4 and len(D.params) == 23 and len(Gs.params) == 64
    assert list(G.params)[:3] == ["dlatent_avg", "synthesis/noise0", "synthesis/noise1"]
    assert list(G.params)[-1] == "mapping/Dense1/bias"
    assert G.params["synthesis/4x4/Const/const"].shape == (1, 32, 4, 4)
    assert G.params["synthesis/8x8/Conv0_up/noise_strength"].shape == ()
    assert D.params["4x4/Conv/weight"].shape == (3, 3, 33, 32)
    assert G.buffers == {} and tf.augment_pipe is None and tf.training_set_kwargs is None
    assert D.init_kwargs == {
        "num_channels": 3,
        "resolution": 32,
        "label_size": 0,
        "mbstd_group_size": 4,
        "fmap_base": 256,
        "fmap_max": 32,
        "num_fp16_res": 0,
        "conv_clamp": None,
    }
    assert G.init_kwargs["latent_size"] == 64 and G.init_kwargs["mapping_layers"] == 2
    assert G.attrs["components"]["mapping"]["static_kwargs"]["dlatent_broadcast"] == 8
    assert_plain(G.init_kwargs)


@pytest.mark.parametrize("key", ["G", "D", "G_ema"])
def test_tf_to_pytorch_names_equal_the_pytorch_snapshot(tf_and_pt, key):
    tf, pt = tf_and_pt
    params, buffers = tf_to_pytorch_names(tf.networks[key])
    ref = pt.networks[key]
    assert list(params) == list(ref.params)
    # TF stores no resample_filter buffers: they are rebuilt from resample_kernel [1,3,3,1];
    # mapping.w_avg comes from dlatent_avg, noise_const from synthesis/noise<i>.
    assert list(buffers) == list(ref.buffers)
    for store, ref_store in ((params, ref.params), (buffers, ref.buffers)):
        for name, value in ref_store.items():
            got = store[name]
            assert got.shape == value.shape and got.dtype == value.dtype, name
            np.testing.assert_array_equal(got, value, err_msg=name)
            assert got.flags.c_contiguous, name


def test_tf_conversion_refuses_leftover_variables(tf_and_pt):
    tf, _ = tf_and_pt
    net = tf.D
    extra = type(net)(
        net.class_name,
        net.init_kwargs,
        {**net.params, "Foo/weight": np.zeros(3)},
        {},
        attrs=net.attrs,
    )
    with pytest.raises(ConvertError, match="Foo/weight"):
        tf_to_pytorch_names(extra)


def test_each_loader_points_to_the_other_format(tmp_path):
    with pytest.raises(ConvertError, match="load_nvlabs_tf_pickle"):
        load_nvlabs_pickle(SG / "sg2ada_uncond32_tf.pkl")
    with pytest.raises(ConvertError, match="load_nvlabs_pickle"):
        load_nvlabs_tf_pickle(SG / "sg2ada_uncond32.pkl")
    with pytest.raises(ConvertError, match="load_rosinality_pt"):
        load_nvlabs_pickle(ROS / "rosinality_32.pt")


# ------------------------------------------------------------------------------------------------
# rosinality checkpoint.


@pytest.fixture(scope="module")
def rosinality():
    return load_rosinality_pt(ROS / "rosinality_32.pt"), meta(ROS / "rosinality_32.json")


def test_rosinality_state_dicts_equal_the_json(rosinality):
    ck, m = rosinality
    assert list(ck.state_dicts) == ["g", "d", "g_ema"]
    for key in ("g", "d", "g_ema"):
        sd = ck.state_dicts[key]
        assert shapes(sd) == [(k, v) for k, v in m["state_dicts"][key].items()], key
        assert all(v.dtype == np.float32 for v in sd.values())
        assert sum(v.size for v in sd.values()) == m["param_counts"][key]
    # g and g_ema carry their own noise buffers.
    assert not np.array_equal(ck.g["noises.noise_0"], ck.g_ema["noises.noise_0"])
    assert ck.args == m["args"]
    assert_plain(ck.args)
    assert ck.ada_aug_p == 0.0 and ck.latent_avg is None and ck.other == {}
    assert set(ck.optimizers) == {"g_optim", "d_optim"}
    assert ck.optimizers["g_optim"]["param_groups"][0]["lr"] == pytest.approx(0.002 * 4 / 5)


def test_infer_rosinality_arch(rosinality):
    ck, m = rosinality
    arch = infer_rosinality_arch(ck.g_ema)
    ga = m["generator_args"]
    assert (arch["size"], arch["style_dim"], arch["n_mlp"]) == (
        ga["size"],
        ga["style_dim"],
        ga["n_mlp"],
    )
    assert arch["n_latent"] == m["n_latent"]
    assert arch["channels"] == {int(r): c for r, c in m["channels"].items() if int(r) <= ga["size"]}
    # Widths up to 32x32 do not depend on the multiplier: undetermined from shapes alone.
    assert arch["channel_multiplier"] is None and ck.args["channel_multiplier"] == 2


def test_infer_rosinality_arch_multiplier_from_64():
    def z(*s):
        return np.zeros(s, np.float32)

    cm, div = 2, 16  # the fixture's channel table: 512/div up to 32, then 256*cm/div, ...
    ch = {4: 32, 8: 32, 16: 32, 32: 32, 64: 256 * cm // div, 128: 128 * cm // div}
    sd = {"style.1.weight": z(8, 8), "style.2.weight": z(8, 8), "input.input": z(1, ch[4], 4, 4)}
    for j, r in enumerate([8, 16, 32, 64, 128]):
        sd[f"convs.{2 * j}.conv.weight"] = z(1, ch[r], ch[r // 2], 3, 3)
        sd[f"convs.{2 * j + 1}.conv.weight"] = z(1, ch[r], ch[r], 3, 3)
        sd[f"to_rgbs.{j}.conv.weight"] = z(1, 3, ch[r], 1, 1)
    arch = infer_rosinality_arch(sd)
    assert arch["size"] == 128 and arch["channel_multiplier"] == cm and arch["channels"] == ch
    assert arch["n_latent"] == 12 and arch["n_mlp"] == 2 and arch["style_dim"] == 8
    with pytest.raises(ConvertError, match="input.input"):
        infer_rosinality_arch({k: v for k, v in sd.items() if k != "input.input"})


def test_rosinality_matches_torch_load(rosinality):
    torch = pytest.importorskip(
        "torch", reason="torch not installed: cross-check against torch.load skipped"
    )
    import argparse

    ck, _ = rosinality
    with torch.serialization.safe_globals([argparse.Namespace]):
        ref = torch.load(ROS / "rosinality_32.pt", weights_only=True, map_location="cpu")
    for key in ("g", "d", "g_ema"):
        assert list(ref[key]) == list(ck.state_dicts[key])
        for name, tensor in ref[key].items():
            np.testing.assert_array_equal(tensor.numpy(), ck.state_dicts[key][name], err_msg=name)
    assert vars(ref["args"]) == ck.args


def test_torch_written_files_match_torch_load(tmp_path):
    """Optimizer state after a step, fp16/bf16/int64, views with offset and stride, both containers."""
    torch = pytest.importorskip(
        "torch", reason="torch not installed: cross-check against torch.load skipped"
    )
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 4)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.randn(2, 3)).sum().backward()
    opt.step()
    base = torch.randn(6, 5)
    g_ema = OrderedDict(
        [
            ("transposed", base.t()),  # stride (1, 5)
            ("sliced", base[2:, 1:4]),  # storage offset, non-contiguous
            ("half", torch.randn(3, 2).half()),
            ("bf16", torch.randn(4).bfloat16()),
            ("long", torch.arange(5)),
            ("scalar", torch.tensor(1.5)),
            ("empty", torch.zeros(0, 3)),
        ]
    )
    obj = {"g_ema": g_ema, "g_optim": opt.state_dict(), "latent_avg": torch.randn(1, 8)}
    for zip_format in (True, False):
        path = tmp_path / f"ck_{zip_format}.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        ck = load_rosinality_pt(path)
        for name, t in g_ema.items():
            want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
            np.testing.assert_array_equal(ck.g_ema[name], want, err_msg=name)
            assert ck.g_ema[name].dtype == want.dtype and ck.g_ema[name].flags.c_contiguous
        state = ck.optimizers["g_optim"]["state"]
        for pid, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                np.testing.assert_array_equal(state[pid][k], v.numpy())
        np.testing.assert_array_equal(ck.latent_avg, obj["latent_avg"].numpy())


# ------------------------------------------------------------------------------------------------
# Hand-made pickles (no torch needed): globals are written under placeholder names, then renamed.

_FAKES: dict[str, tuple[str, str]] = {}


def fake_global(module: str, name: str, base: type = object) -> type:
    """A placeholder class that pickles as a reference to `module.name` (see `forge`)."""
    alias = f"_Fake_{len(_FAKES)}_{name}"
    cls = type(alias, (base,), {"__module__": __name__, "__qualname__": alias})
    globals()[alias] = cls
    _FAKES[alias] = (module, name)
    return cls


class Call:
    """Pickles as `target(*args)`."""

    def __init__(self, target, *args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


def forge_bytes(data: bytes) -> bytes:
    """Renames every placeholder global in a protocol-2 or -3 pickle to the global it stands for."""
    for alias, (module, name) in _FAKES.items():
        data = data.replace(
            b"c" + __name__.encode() + b"\n" + alias.encode() + b"\n",
            b"c" + module.encode() + b"\n" + name.encode() + b"\n",
        )
    return data


def forge(obj) -> bytes:
    """Protocol-3 pickle of `obj` with every placeholder renamed to the global it stands for."""
    return forge_bytes(pickle.dumps(obj, protocol=3))


HalfStorage = fake_global("torch", "HalfStorage")
FloatStorage = fake_global("torch", "FloatStorage")
LoadFromBytes = fake_global("torch.storage", "_load_from_bytes")
RebuildTensorV2 = fake_global("torch._utils", "_rebuild_tensor_v2")
RebuildParameter = fake_global("torch._utils", "_rebuild_parameter")
Reconstruct = fake_global("torch_utils.persistence", "_reconstruct_persistent_obj")
EasyDict = fake_global("dnnlib.util", "EasyDict", dict)
ImportHook = fake_global("torch_utils.persistence", "import_hook")
TorchLoad = fake_global("torch", "load")


LEGACY_HEAD = (
    pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    + pickle.dumps(1001, protocol=2)
    + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
)


class _Pid:
    def __init__(self, pid):
        self.pid = pid


def legacy_payload(stype, values: np.ndarray, key="k0") -> bytes:
    """A legacy torch.save payload of one storage, as NVlabs pickles embed them."""

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, _Pid) else None

    def dump(obj):
        buf = io.BytesIO()
        P(buf, protocol=2).dump(obj)
        return buf.getvalue()

    main = forge_bytes(dump(_Pid(("storage", stype, key, "cpu", values.size, None))))
    return (
        LEGACY_HEAD
        + main
        + dump([key])
        + struct.pack("<q", values.size)
        + values.astype("<" + values.dtype.str[1:]).tobytes()
    )


def tensor(stype, values, offset, size, stride):
    storage = Call(LoadFromBytes, legacy_payload(stype, values))
    return Call(
        RebuildParameter,
        Call(RebuildTensorV2, storage, offset, size, stride, False, OrderedDict()),
        False,
        OrderedDict(),
    )


def module(class_name, params=(), buffers=(), modules=(), **kwargs):
    ez = EasyDict()
    ez.update(kwargs)
    state = {
        "training": False,
        "_parameters": OrderedDict(params),
        "_buffers": OrderedDict(buffers),
        "_modules": OrderedDict(modules),
        "_init_args": (),
        "_init_kwargs": ez,
    }
    return Call(
        Reconstruct,
        {
            "type": "class",
            "version": 6,
            "module_src": "raise SystemExit",
            "class_name": class_name,
            "state": state,
        },
    )


def test_forged_bare_network_fp16_strided_views(tmp_path):
    half = np.arange(12, dtype=np.float16) / 4
    flt = np.arange(10, dtype=np.float32)
    inner = module(
        "Inner", params=[("w", tensor(FloatStorage, flt, 2, (2, 3), (1, 2))), ("none", None)]
    )
    net = module(
        "Tiny",
        params=[("h", tensor(HalfStorage, half, 1, (2, 2), (4, 1)))],
        buffers=[("b", tensor(FloatStorage, flt, 0, (), ()))],
        modules=[("inner", inner), ("gone", None)],
        depth=np.float64(2.5),
        nested={"k": [1, np.int64(3)]},
    )
    path = tmp_path / "bare.pkl"
    path.write_bytes(forge(net))
    snap = load_nvlabs_pickle(path)
    rec = snap.networks["network"]
    assert rec.class_name == "Tiny" and list(snap.networks) == ["network"]
    assert list(rec.params) == ["h", "inner.w"] and list(rec.buffers) == ["b"]
    np.testing.assert_array_equal(rec.params["h"], np.array([[1, 2], [5, 6]], np.float16) / 4)
    assert rec.params["h"].dtype == np.float16
    np.testing.assert_array_equal(rec.params["inner.w"], flt[2:8].reshape(3, 2).T)
    assert rec.buffers["b"].shape == () and rec.buffers["b"] == 0
    assert rec.init_kwargs == {"depth": 2.5, "nested": {"k": [1, 3]}}
    assert_plain(rec.init_kwargs)


def test_forged_tensor_reaching_past_its_storage_is_refused(tmp_path):
    net = module(
        "Tiny", params=[("w", tensor(FloatStorage, np.zeros(4, np.float32), 1, (2, 2), (2, 1)))]
    )
    path = tmp_path / "oob.pkl"
    path.write_bytes(forge(net))
    with pytest.raises(ConvertError, match=r"oob\.pkl: .*past the end of its storage"):
        load_nvlabs_pickle(path)


TFNetwork = fake_global("dnnlib.tflib.network", "Network")


def tf_net(name, func, static_kwargs, variables, components=None):
    net = TFNetwork()
    net.__dict__.update(
        version=4,
        name=name,
        static_kwargs=static_kwargs,
        components=components or {},
        build_module_src="raise SystemExit",
        build_func_name=func,
        variables=variables,
    )
    return net


def pytorch_to_tf_generator(net):
    """The README's PyTorch -> TF rules (the inverse of tf_to_pytorch_names) for a generator."""
    synth, mapping = [], []
    tf_layer = {"conv0": "Conv0_up", "conv1": "Conv1", "torgb": "ToRGB"}
    for name, v in net.params.items():
        parts = name.split(".")
        if parts[0] == "mapping":
            layer = "LabelEmbed" if parts[1] == "embed" else "Dense" + parts[1][2:]
            mapping.append((f"{layer}/{parts[2]}", v.T if parts[2] == "weight" else v))
            continue
        r = int(parts[1][1:])
        if parts[2] == "const":
            synth.append(("4x4/Const/const", v[None]))
            continue
        layer = "Conv" if (r, parts[2]) == (4, "conv1") else tf_layer[parts[2]]
        key = ".".join(parts[3:])
        if key == "weight":
            w = v.transpose(2, 3, 1, 0)
            v = w[::-1, ::-1] if parts[2] == "conv0" else w
        elif key == "affine.weight":
            key, v = "mod_weight", v.T
        elif key == "affine.bias":
            key, v = "mod_bias", v - np.float32(1)
        elif key == "noise_strength":
            v = np.float32(v)
        synth.append((f"{r}x{r}/{layer}/{key}", v if v.ndim == 0 else np.ascontiguousarray(v)))
    for name, v in net.buffers.items():
        parts = name.split(".")
        if parts[-1] == "noise_const":
            log2 = int(np.log2(int(parts[1][1:])))
            i = 0 if log2 == 2 else 2 * log2 - (5 if parts[2] == "conv0" else 4)
            synth.append((f"noise{i}", v[None, None]))
    own = [("lod", np.float32(0)), ("dlatent_avg", net.buffers["mapping.w_avg"])]
    components = {
        "synthesis": tf_net("G_synthesis", "G_synthesis_stylegan2", {}, synth),
        "mapping": tf_net("G_mapping", "G_mapping", {}, mapping),
    }
    return tf_net("G", "G_main", {"label_size": 3}, own, components)


def pytorch_to_tf_discriminator(net):
    tf_layer = {"fromrgb": "FromRGB", "conv0": "Conv0", "conv1": "Conv1_down", "skip": "Skip"}
    variables = []
    for name, v in net.params.items():
        parts = name.split(".")
        if parts[0] == "mapping":
            layer = "LabelEmbed" if parts[1] == "embed" else "Mapping" + parts[1][2:]
        elif parts[0] == "b4":
            layer = {"conv": "4x4/Conv", "fc": "4x4/Dense0", "out": "Output"}[parts[1]]
        else:
            layer = f"{parts[0][1:]}x{parts[0][1:]}/{tf_layer[parts[1]]}"
        if parts[-1] == "weight":
            v = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v.T
        variables.append((f"{layer}/{parts[-1]}", np.ascontiguousarray(v)))
    return tf_net("D", "D_stylegan2", {"label_size": 3}, variables[::-1])  # order must not matter


def test_tf_conditional_round_trip(tmp_path):
    """Conditional nets (LabelEmbed, D label mapping), a v4-style `lod`, shuffled file order."""
    pt = load_nvlabs_pickle(SG / "sg2ada_cond16.pkl")
    triple = (
        pytorch_to_tf_generator(pt.G),
        pytorch_to_tf_discriminator(pt.D),
        pytorch_to_tf_generator(pt.G_ema),
    )
    path = tmp_path / "cond16_tf.pkl"
    path.write_bytes(forge(triple))
    tf = load_nvlabs_tf_pickle(path)
    assert "mapping/LabelEmbed/weight" in tf.G.params and "LabelEmbed/weight" in tf.D.params
    for key in ("G", "D", "G_ema"):
        params, buffers = tf_to_pytorch_names(tf.networks[key])
        ref = pt.networks[key]
        assert list(params) == list(ref.params) and list(buffers) == list(ref.buffers), key
        for name, value in [*ref.params.items(), *ref.buffers.items()]:
            got = params.get(name, buffers.get(name))
            assert got.shape == value.shape and got.dtype == value.dtype, name
            if name.endswith("affine.bias"):  # (b - 1) + 1 may round off the last bit
                np.testing.assert_allclose(got, value, rtol=0, atol=2e-7, err_msg=name)
            else:
                np.testing.assert_array_equal(got, value, err_msg=name)

    # A bias-free LabelConcat (conditional original StyleGAN2) has no PyTorch counterpart.
    g = tf.G
    bad = type(g)(
        g.class_name,
        g.init_kwargs,
        {**g.params, "mapping/LabelConcat/weight": np.zeros((3, 48))},
        {},
        attrs=g.attrs,
    )
    with pytest.raises(ConvertError, match="LabelConcat"):
        tf_to_pytorch_names(bad)


# ------------------------------------------------------------------------------------------------
# Hostile and damaged files.


class SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    return {
        "os.system": pickle.dumps(SystemCall(cmd)),
        "builtins.eval": pickle.dumps(Call(eval, f"open({str(marker)!r}, 'w')")),
        "builtins.exec": pickle.dumps(Call(exec, f"open({str(marker)!r}, 'w')")),
        "subprocess.Popen": pickle.dumps(Call(subprocess.Popen, ["touch", str(marker)])),
        "import_hook": forge({"G": Call(ImportHook, print)}),
        "torch.load": forge(Call(TorchLoad, str(marker))),
        # an allowed global used in a dangerous way: a numpy object array
        "object array": pickle.dumps(np.array([1, "x"], dtype=object)),
        # a nested payload naming a forbidden global inside an allowed call
        "nested": forge({"G": Call(LoadFromBytes, LEGACY_HEAD + pickle.dumps(SystemCall(cmd), 2))}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "os.system",
        "builtins.eval",
        "builtins.exec",
        "subprocess.Popen",
        "import_hook",
        "torch.load",
        "object array",
        "nested",
    ],
)
@pytest.mark.parametrize("loader", [load_nvlabs_pickle, load_nvlabs_tf_pickle])
def test_hostile_pickles_are_refused_and_never_run(tmp_path, case, loader):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pkl"
    path.write_bytes(hostile_pickles(marker)[case])
    with pytest.raises(ConvertError) as info:
        loader(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "refusing to load" in msg, msg
    if case == "os.system":
        assert "posix.system" in msg or "os.system" in msg or "nt.system" in msg
        assert "may be malicious" in msg
    if case == "subprocess.Popen":
        assert "subprocess.Popen" in msg
    if case == "import_hook":
        assert "torch_utils.persistence.import_hook" in msg
    assert not marker.exists()


def test_hostile_pt_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "MARKER"
    src = zipfile.ZipFile(ROS / "rosinality_32.pt")
    for case in ("os.system", "builtins.eval", "torch.load"):
        path = tmp_path / f"evil_{case}.pt"
        with zipfile.ZipFile(path, "w") as out:
            for info in src.infolist():
                data = src.read(info)
                if info.filename.endswith("/data.pkl"):
                    data = hostile_pickles(marker)[case]
                out.writestr(info.filename, data)
        with pytest.raises(ConvertError, match=r"refusing to load") as info:
            load_rosinality_pt(path)
        assert str(info.value).startswith(f"{path}: ")
        assert not marker.exists()
    # A checkpoint naming a global that is harmless but not part of the format is refused too.
    path = tmp_path / "other_global.pt"
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps({"g_ema": OrderedDict(), "when": datetime.date(2020, 1, 1)}, 3)
            out.writestr(info.filename, data)
    with pytest.raises(ConvertError, match=r"references datetime\.date"):
        load_rosinality_pt(path)


TAMPERING = {
    # BUILD with slot state on a stub function: would set its __defaults__
    "function": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b.",
    # BUILD on a shared storage-type stub: would change its dtype for later loads
    "storage type": b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeK\x01sb.",
    # BUILD with slot state on a stub class: would replace dict.update
    "class": b"\x80\x02cdnnlib.util\nEasyDict\nN}X\x06\x00\x00\x00updateK\x01s\x86b.",
    # BUILD on a stub class with a __setstate__ meant for instances
    "tf class": b"\x80\x02cdnnlib.tflib.network\nNetwork\n}X\x05\x00\x00\x00stateK\x01sb.",
    # numpy.ndarray may only be named as the argument of _reconstruct, never called
    "ndarray call": b"\x80\x02cnumpy\nndarray\nK\x02\x85R.",
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_pickles_cannot_modify_the_stubs(tmp_path, case):
    path = tmp_path / "tamper.pkl"
    path.write_bytes(TAMPERING[case])
    with pytest.raises(ConvertError, match=str(path)):
        if case == "storage type":  # storage types are named only where torch.save puts them
            safe_pickle.restricted_loads(
                TAMPERING[case],
                source=str(path),
                allowed=safe_pickle.TORCH_STORAGE_GLOBALS,
                expected="a storage",
            )
        else:
            load_nvlabs_pickle(path)
    assert safe_pickle.STORAGE_TYPES["FloatStorage"].dtype == np.dtype("<f4")
    # The stubs still work: a real file reads as before.
    snap = load_nvlabs_pickle(SG / "sg2ada_cond16.pkl")
    assert snap.G.params["mapping.fc0.weight"].dtype == np.float32
    assert (
        sum(v.size for v in snap.G.params.values())
        == meta(SG / "sg2ada_cond16.json")["param_counts"]["G"]
    )


DAMAGED = {
    "empty": lambda good: b"",
    "text": lambda good: b"This is not a checkpoint.\nJust some text.\n",
    "random": lambda good: np.random.default_rng(0).bytes(4096),
    "half": lambda good: good[: len(good) // 2],
    "tenth": lambda good: good[: len(good) // 10],
    "nearly": lambda good: good[:-1],
}
FILES = [
    (load_nvlabs_pickle, SG / "sg2ada_uncond32.pkl"),
    (load_nvlabs_pickle, SG / "sg2ada_cond16.pkl"),
    (load_nvlabs_tf_pickle, SG / "sg2ada_uncond32_tf.pkl"),
    (load_rosinality_pt, ROS / "rosinality_32.pt"),
]


@pytest.mark.parametrize("damage", list(DAMAGED))
@pytest.mark.parametrize("loader,good", FILES, ids=[p.name for _, p in FILES])
def test_damaged_files_give_a_convert_error_naming_the_file(tmp_path, loader, good, damage):
    path = tmp_path / f"damaged_{damage}{good.suffix}"
    path.write_bytes(DAMAGED[damage](good.read_bytes()))
    with pytest.raises(ConvertError) as info:
        loader(path)
    assert isinstance(info.value, ToonjaxError) and isinstance(info.value, ValueError)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    if damage == "empty":
        assert "empty" in msg
    if damage in ("half", "tenth"):
        assert "truncated" in msg
    assert "expected" in msg, msg


@pytest.mark.parametrize("loader,good", FILES, ids=[p.name for _, p in FILES])
def test_truncated_anywhere_is_a_convert_error(tmp_path, loader, good):
    data = good.read_bytes()
    path = tmp_path / good.name
    for frac in np.linspace(0.001, 0.999, 23):
        path.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ConvertError, match=str(path)):
            loader(path)


def test_deeply_nested_data_is_a_convert_error(tmp_path):
    n = 200_000  # lists nested n deep: the C unpickler builds them, recursion over them fails
    key = b"training_set_kwargs"
    data = b"\x80\x02}X\x01\x00\x00\x00GNsX" + struct.pack("<I", len(key)) + key
    data += b"]" * n + b"a" * (n - 1) + b"s."
    path = tmp_path / "deep.pkl"
    path.write_bytes(data)
    with pytest.raises(ConvertError, match=f"{path}: .*nested too deeply"):
        load_nvlabs_pickle(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConvertError, match="no such file"):
        load_nvlabs_pickle(tmp_path / "nope.pkl")
    with pytest.raises(ConvertError, match="is a directory"):
        load_rosinality_pt(tmp_path)
