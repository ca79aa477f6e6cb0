"""onnxruntime references for the stylizer tests and the benchmark (needs onnx + onnxruntime: `.[dev]`).

`float_graph` rewrites an int8 ONNX model so that activations stay float (every QuantizeLinear,
and every DequantizeLinear whose input is not a weight initializer, becomes Identity), while the
weights are still dequantized by the graph itself. Our PyTorch modules must match that graph to
float rounding; the remaining difference to the original file is the activation fake-quant alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def prepared_graph(path: Path, quantized: bool = True, dynamic: bool = False) -> bytes:
    """The model's bytes; `quantized=False` strips the activation fake-quant (see module doc),
    `dynamic=True` frees the input height/width (the networks are convolutional; the export fixed them)."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    if dynamic:
        for inp in g.input:
            dims = inp.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].dim_value not in (0, 1):
                dims[1].dim_param, dims[2].dim_param = "height", "width"
        del g.value_info[:]
    if quantized:
        return model.SerializeToString()
    inits = {i.name for i in g.initializer}
    for node in g.node:
        if node.op_type == "QuantizeLinear" or (node.op_type == "DequantizeLinear" and node.input[0] not in inits):
            node.op_type = "Identity"
            del node.input[1:]
            del node.attribute[:]
    del g.value_info[:]  # intermediate int8 type annotations no longer hold
    return model.SerializeToString()


class OrtModels:
    """Run the predictor/transformer ONNX files (original or float) on NCHW [0,1] numpy batches, one image a call."""

    def __init__(self, model_dir: Path, quantized: bool = True, threads: int | None = None, dynamic: bool = False,
                 fuse: bool = True):
        """fuse=False runs the int8 graph's Quantize/DequantizeLinear nodes as written, in float (graph
        optimisations off), instead of fusing them into int8 kernels whose rounding depends on the CPU."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if not fuse:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads

        def session(name):
            return ort.InferenceSession(prepared_graph(model_dir / name, quantized, dynamic), opts, providers=["CPUExecutionProvider"])

        self.predict = session("arbitrary_predict.onnx")
        self.transform = session("arbitrary_transform.onnx")

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, 256, 256) -> (N, 100); any square size with dynamic=True."""
        name = self.predict.get_inputs()[0].name
        out = [self.predict.run(None, {name: im.transpose(1, 2, 0)[None].astype(np.float32)})[0] for im in images]
        return np.concatenate(out).reshape(len(images), -1)

    def stylize(self, content: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, 3, 384, 384), (N, 100) -> (N, 3, 384, 384); any size with dynamic=True."""
        a, b = (i.name for i in self.transform.get_inputs())
        out = [self.transform.run(None, {a: c.transpose(1, 2, 0)[None].astype(np.float32),
                                         b: e.reshape(1, 1, 1, -1).astype(np.float32)})[0][0].transpose(2, 0, 1)
               for c, e in zip(content, z)]
        return np.stack(out)
