"""transgan's StyleGAN2 networks against StyleGAN2-ADA's (reference kit): every G and D case, the snapshot
converter (safe: a pickle that would run code is refused, and nothing runs), the official generate.py's seed
convention, ONNX export and serving of a converted generator; old stylegan model files still load."""

from __future__ import annotations

import collections
import json
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from conftest import real_data_path
from test_cgan import cli

import transgan
from transgan.convert.stylegan_pickle import (
    PersistentRecord,
    convert_snapshot,
    discriminator_options,
    generator_options,
    load_official_state,
    read_snapshot,
)
from transgan.errors import TransganError
from transgan.nets import build_network

G_CASES = ["G_uncond32_skip", "G_cond32_skip", "G_uncond16_map8"]
D_CASES = ["D_uncond32_resnet", "D_cond32_resnet", "D_uncond32_orig", "D_uncond32_skip"]
TOLERANCE = 1e-4


def kit(*parts: str):
    return real_data_path("stylegan2_reference", *parts)


def array(*parts: str) -> torch.Tensor:
    return torch.from_numpy(np.load(kit(*parts)))


def official(case: str) -> torch.nn.Module:
    kwargs = json.loads(kit(case, "kwargs.json").read_text())
    kind, options = (
        ("generator", generator_options) if case.startswith("G") else ("discriminator", discriminator_options)
    )
    net = build_network(f"stylegan2_{kind}", **options(kwargs))
    return load_official_state(net, torch.load(kit(case, "state_dict.pth"), weights_only=True), case)


def labels_of(c: torch.Tensor) -> torch.Tensor | None:
    return c.argmax(dim=1) if c.shape[1] else None  # class indices: the networks feed them as official one-hot c


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert float((ours.detach() - theirs).abs().max()) <= TOLERANCE


@pytest.mark.parametrize("case", G_CASES)
def test_generator_equals_the_official(case):
    G, z, labels = official(case), array(case, "z.npy"), labels_of(array(case, "c.npy"))
    with torch.no_grad():
        ws = G.mapping(z, labels)
        close(ws, array(case, "ws.npy"))
        close(G.mapping(z, labels, 0.7), array(case, "ws_psi0.7.npy"))
        close(G.mapping(z, labels, 0.7, 3), array(case, "ws_psi0.7_cutoff3.npy"))
        close(G(z, labels, noise_mode="const"), array(case, "img_const.npy"))
        close(G(z, labels), array(case, "img_const.npy"))  # eval mode: const noise by default
        close(G(z, labels, 0.7, noise_mode="const"), array(case, "img_const_psi0.7.npy"))
        close(G(z, labels, 0.7, 3, noise_mode="const"), array(case, "img_const_psi0.7_cutoff3.npy"))
        close(G(z, labels, noise_mode="none"), array(case, "img_none.npy"))
        mixed = G.mix(ws, G.mapping(array(case, "z_mix.npy"), labels), 3)
        close(mixed, array(case, "ws_mixed.npy"))
        close(G.synthesis(mixed, "const"), array(case, "img_mixed_const.npy"))
        G.train().mapping(z, labels)  # training mode moves the w average
        close(G.mapping.w_avg, array(case, "w_avg_after_train_mapping.npy"))


@pytest.mark.parametrize("case", D_CASES)
def test_discriminator_equals_the_official(case):
    D, images, labels = official(case), array(case, "images.npy"), labels_of(array(case, "c.npy"))
    with torch.no_grad():
        close(D(images, labels), array(case, "logits.npy").flatten())
        first2 = None if labels is None else labels[:2]
        close(D(images[:2], first2), array(case, "logits_first2.npy").flatten())  # mbstd group min(4, N)


def test_snapshot_converts_and_reproduces_its_outputs(tmp_path):
    snapshot = kit("snapshot_cond32", "network-snapshot.pkl")
    z, labels = array("G_cond32_skip", "z.npy"), labels_of(array("G_cond32_skip", "c.npy"))
    images, d_labels = array("D_cond32_resnet", "images.npy"), labels_of(array("D_cond32_resnet", "c.npy"))
    for network, expected in (("G_ema", "G_ema.img_const.npy"), ("G", "G.img_const.npy")):
        out = tmp_path / f"{network}.safetensors"
        args = [] if network == "G_ema" else ["--network", network]  # G_ema by default
        result = cli("convert", str(snapshot), str(out), *args)
        assert result.exit_code == 0, result.output
        G = transgan.load(out)
        assert G.transgan_config["num_fp16_res"] == 4 and G.transgan_config["conv_clamp"] == 256
        with torch.no_grad():
            close(G(z, labels, noise_mode="const"), array("snapshot_cond32", expected))
        if network == "G_ema":
            close(G.mapping(z, labels), array("snapshot_cond32", "G_ema.ws.npy"))
    result = cli("convert", str(snapshot), str(tmp_path / "D.safetensors"), "--network", "D")
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        close(
            transgan.load(tmp_path / "D.safetensors", "D")(images, d_labels),
            array("snapshot_cond32", "D.logits.npy").flatten(),
        )
    result = cli("convert", str(snapshot), str(tmp_path / "x.safetensors"), "--network", "augment_pipe")
    assert isinstance(result.exception, TransganError) and "--network augment_pipe" in str(result.exception)


def plain(value):
    """Records and EasyDicts back to plain dicts, so a test pickle names only official globals."""
    if isinstance(value, dict) and not isinstance(value, collections.OrderedDict):
        return {key: plain(item) for key, item in value.items()}
    return value


@pytest.fixture
def official_format(monkeypatch):
    """The official persistence module's reconstructor (it executes each record's module_src), importable under
    its official name, so test pickles reference exactly the official global."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        exec(meta["module_src"], {})
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)
    return _reconstruct_persistent_obj


def record_of(state: dict, class_name: str, init_kwargs: dict, reconstruct) -> Record:
    """An official-format persistent record tree holding a state dict (module_src: a stub that raises)."""

    def node():
        return {"_parameters": collections.OrderedDict(), "_buffers": collections.OrderedDict(), "_modules": {}}

    root = node()
    for key, value in state.items():
        *path, name = key.split(".")
        where = root
        for part in path:
            where = where["_modules"].setdefault(part, node())
        kind = "_buffers" if name in ("w_avg", "noise_const", "resample_filter") else "_parameters"
        where[kind][name] = value

    def make(tree, name, kwargs):
        modules = collections.OrderedDict((k, make(v, "Module", {})) for k, v in tree["_modules"].items())
        state = {**tree, "_modules": modules, "_non_persistent_buffers_set": set(), "_init_kwargs": kwargs}
        meta = {"type": "class", "version": 6, "module_src": "raise ImportError('stub')", "class_name": name}
        return Record({**meta, "state": {**state, "training": False}}, reconstruct)

    return make(root, class_name, init_kwargs)


def test_unconditional_snapshot_converts(tmp_path, official_format):
    def load(case):
        return torch.load(kit(case, "state_dict.pth"), weights_only=True), json.loads(
            kit(case, "kwargs.json").read_text()
        )

    (g_state, g_kwargs), (d_state, d_kwargs) = load("G_uncond32_skip"), load("D_uncond32_orig")
    snapshot = {"G": record_of(g_state, "Generator", g_kwargs, official_format)}
    snapshot["D"] = record_of(d_state, "Discriminator", d_kwargs, official_format)
    snapshot["G_ema"] = snapshot["G"]
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps(snapshot, protocol=3))  # 2021 snapshots: protocol 3
    for network, case in (("G_ema", "G_uncond32_skip"), ("D", "D_uncond32_orig")):
        out = tmp_path / f"{network}.safetensors"
        result = cli("convert", str(path), str(out), "--network", network)
        assert result.exit_code == 0, result.output
        net = transgan.load(out, network[0])
        with torch.no_grad():
            if network == "D":
                close(net(array(case, "images.npy")), array(case, "logits.npy").flatten())
            else:
                assert net.num_classes == 0
                close(net(array(case, "z.npy"), noise_mode="const"), array(case, "img_const.npy"))
    result = cli("bench", str(tmp_path / "G_ema.safetensors"), "--engine", "torch", "--batch-size", "2",
                 "--iterations", "2", "--warmup", "1", "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, official_format):
    marker = tmp_path / "ran"
    # 1. A global outside the format (here: a function that writes a file), refused before it is called.
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Touch(marker)}, protocol=4))
    result = cli("convert", str(evil), str(tmp_path / "out.safetensors"))
    assert isinstance(result.exception, TransganError) and "refused to load pathlib.Path.touch" in str(result.exception)
    assert not marker.exists()

    # 2. The official format itself: its reconstructor executes each record's module_src. A snapshot whose
    # source writes the marker converts without running it, although unpickling it the official way would.
    data = read_snapshot(kit("snapshot_cond32", "network-snapshot.pkl"))
    reconstruct = official_format

    def wrap(record):
        meta = plain(dict(record))
        modules = record["state"]["_modules"]
        meta["state"]["_modules"] = collections.OrderedDict(
            (name, wrap(child) if isinstance(child, PersistentRecord) else child) for name, child in modules.items()
        )
        meta["module_src"] = f"open({str(marker)!r}, 'w').write('ran')"
        return Record(meta, reconstruct)

    armed = tmp_path / "armed.pkl"
    armed.write_bytes(pickle.dumps({"G_ema": wrap(data["G_ema"])}, protocol=4))
    G = convert_snapshot(armed)
    assert not marker.exists()  # converted, nothing ran
    z, labels = array("G_cond32_skip", "z.npy"), labels_of(array("G_cond32_skip", "c.npy"))
    with torch.no_grad():
        close(G(z, labels, noise_mode="const"), array("snapshot_cond32", "G_ema.img_const.npy"))
    pickle.loads(armed.read_bytes())  # the official way: the file's code runs
    assert marker.exists()


class Touch:
    """Pickles as a call to pathlib.Path.touch(marker)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class Record:
    """Pickles as the official persistence record: reconstructor(meta)."""

    def __init__(self, meta, reconstruct):
        self.meta, self.reconstruct = meta, reconstruct

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


def test_fp16_modulated_conv_prenormalises_like_the_official():
    """On CUDA the top resolutions run in fp16; the official pre-normalisation keeps them equal to fp32."""
    from transgan.nets.fir import fir_filter
    from transgan.nets.stylegan2 import modulated_conv2d

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 8, 8, generator=generator)
    weight = torch.randn(4, 8, 3, 3, generator=generator) * 30  # large: would overflow fp16 without it
    styles = torch.rand(2, 8, generator=generator) * 20
    for up in (1, 2):
        full = modulated_conv2d(x, weight, styles, None, up, 1, fir_filter(), flip_weight=up == 1)
        half = modulated_conv2d(x.half(), weight, styles, None, up, 1, fir_filter(), flip_weight=up == 1)
        assert half.dtype == torch.float16 and float((half.float() - full).abs().max()) < 1e-2 * float(full.abs().max())
