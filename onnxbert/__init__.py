"""onnxbert: run BERT-family encoders in production without PyTorch.

`onnxbert.export` turns a checkpoint into a verified ONNX model directory (the `export` extra);
`onnxbert.runtime` loads that directory with ONNX Runtime and Rust tokenizers (the `cpu` or `gpu` extra).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
