"""onnxruntime references for the stylizer tests and the benchmark.

`float_graph` rewrites an int8 ONNX model so that activations stay float (every QuantizeLinear,
and every DequantizeLinear whose input is not a weight initializer, becomes Identity), while the
weights are still dequantized by the graph itself. Our PyTorch modules must match that graph to
float rounding; the remaining difference to the original file is the activation fake-quant alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def float_graph(path: Path) -> bytes:
    import onnx

    model = onnx.load(str(path))
    g = model.graph
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

    def __init__(self, model_dir: Path, quantized: bool = True, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads

        def session(name):
            src = str(model_dir / name) if quantized else float_graph(model_dir / name)
            return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])

        self.predict = session("arbitrary_predict.onnx")
        self.transform = session("arbitrary_transform.onnx")

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, 256, 256) -> (N, 100)."""
        name = self.predict.get_inputs()[0].name
        out = [self.predict.run(None, {name: im.transpose(1, 2, 0)[None].astype(np.float32)})[0] for im in images]
        return np.concatenate(out).reshape(len(images), -1)

    def stylize(self, content: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, 3, 384, 384), (N, 100) -> (N, 3, 384, 384)."""
        a, b = (i.name for i in self.transform.get_inputs())
        out = [self.transform.run(None, {a: c.transpose(1, 2, 0)[None].astype(np.float32),
                                         b: e.reshape(1, 1, 1, -1).astype(np.float32)})[0][0].transpose(2, 0, 1)
               for c, e in zip(content, z)]
        return np.stack(out)
