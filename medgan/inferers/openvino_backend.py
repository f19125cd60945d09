"""OpenVINO as the CPU backend of a PyTorch network: the same fp32 network, other convolution kernels.

On 2 CPU cores OpenVINO runs the denoising U-Net's 96 x 96 x 16 windows 1.3-1.6x faster than PyTorch
with the same output to float32 rounding; for the kernel and super-resolution networks it measured no
faster, so those bundles keep PyTorch (docs/running.md, *CPU speed and memory*).
:class:`OpenVINONetwork` wraps the loaded network; each input shape the sliding window feeds it (one or
two: full batches and a last, smaller one) is converted and compiled once, then reused.
The PyTorch module stays inside the wrapper, so ``eval()``, ``parameters()`` and device queries behave
as before. CUDA keeps PyTorch: :func:`with_cpu_backend` returns the network unchanged there.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from medgan.errors import MedganError

#: CPU backends a bundle's ``cpu_backend`` setting may name.
CPU_BACKENDS = ("torch", "openvino")


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as err:  # a dependency of medgan; missing only in a hand-made environment
        raise MedganError("cpu_backend openvino needs the openvino package, which is not installed",
                          fix="pip install openvino (a medgan dependency), or run with --override cpu_backend=torch"
                          ) from err
    return openvino


class OpenVINONetwork(torch.nn.Module):
    """Run ``network``'s forward pass with OpenVINO on the CPU in fp32, compiled once per input shape.

    Args:
        network: a PyTorch module on the CPU taking and returning one tensor.
        num_threads: OpenVINO inference threads; default ``torch.get_num_threads()`` at compile time.
    """

    def __init__(self, network: torch.nn.Module, num_threads: Optional[int] = None) -> None:
        super().__init__()
        self.network = network
        self.num_threads = num_threads
        self._compiled: Dict[Tuple[int, ...], Any] = {}

    def compiled_for(self, x: torch.Tensor) -> Any:
        """The compiled model for ``x``'s shape (converted from the PyTorch module on first use)."""
        shape = tuple(int(v) for v in x.shape)
        if shape not in self._compiled:
            ov = _openvino()
            example = x.detach().to(torch.float32).clone()
            with torch.inference_mode(False), torch.no_grad():
                model = ov.convert_model(self.network.eval(), example_input=example)
            threads = self.num_threads or torch.get_num_threads()
            self._compiled[shape] = ov.Core().compile_model(
                model, "CPU", {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": "f32",
                               "PERFORMANCE_HINT": "LATENCY"})
        return self._compiled[shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"the OpenVINO backend runs on the CPU; got a tensor on {x.device}")
        if torch.is_autocast_enabled("cpu"):
            raise ValueError("the OpenVINO backend computes in fp32: use cpu_precision fp32 with cpu_backend openvino, "
                             "or cpu_backend torch for bf16 autocast")
        values = x.as_tensor() if hasattr(x, "as_tensor") else x
        out = self.compiled_for(values)(np.ascontiguousarray(values.detach().to(torch.float32).numpy()))[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def with_cpu_backend(network: torch.nn.Module, backend: str, device: torch.device | str) -> torch.nn.Module:
    """``network`` run by ``backend`` on the CPU; on any other device the PyTorch network itself.

    Raises:
        MedganError: an unknown backend, or ``openvino`` without the package.
    """
    if backend not in CPU_BACKENDS:
        raise MedganError(f"unknown cpu_backend {backend!r}", fix=f"use one of {', '.join(CPU_BACKENDS)}")
    if torch.device(device).type != "cpu" or backend == "torch":
        return network
    _openvino()
    return OpenVINONetwork(network)
