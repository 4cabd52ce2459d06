"""PyTorch: everything fwbench does that imports torch.

- runtime: threads, seeds, TF32, determinism, and reading them back;
- the model builder over the shared spec (fwbench.models.architecture);
- the training adapter: a plain loop over pre-loaded tensors;
- evaluation and export: the saved state dict rebuilt into its architecture,
  an ExportedProgram via `torch.export` saved as .pt2 (the format AOTInductor
  and ExecuTorch start from), reloaded with `torch.export.load`;
- the bench hooks: modes, precision, sync, inference, device memory;
- the MLflow flavour.

The preprocessed arrays are NHWC (Keras' layout); torch convolutions want
NCHW: every way in goes through `torch_layout`. A bench mode replaces only
`adapter.model`: compile wraps it in `torch.compile` (the optimizer keeps the
same parameters). Its first call compiles; that time is the job's
first_step_s. Inductor keeps a cache on disk (by default under /tmp), so a
later process compiles faster: the first step's hits and misses are recorded
(`compile_cache_note`).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fwbench.bench.timing import no_sync
from fwbench.frameworks.batches import predict_batched
from fwbench.models.architecture import (
    LSTM, NCF, Conv, ConvBN, Dense, Dropout, Embedding, Encoder, Flatten, GlobalAvgPool, Layer, MaxPool, Residual,
    has_projection_shortcut, layer_shapes,
)
from fwbench.units import BYTES_PER_MIB

CHECKPOINT_FILE = "state.pt"
NHWC_RANK = 4  # a batch of images; token ids and (user, item) pairs are rank 2
MODEL_FILE = "model.pt"
EXPORT_FILE = "model.pt2"
# cuBLAS needs this to run deterministically (the pipeline asks torch for determinism).
CUBLAS_WORKSPACE = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# ---------------------------------------------------------------- runtime


def configure(threads: int, seed: int, tf32: bool, deterministic: bool) -> None:
    """Threads, seeds, determinism and TF32 (set explicitly: torch's default allows it for convolutions only)."""
    torch.set_num_threads(threads)
    # Fixed once per process; a second call raises, which tests running
    # several trainings in one process would hit.
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(seed)
    np.random.seed(seed)
    # Only on a change: the call imports torch's compiler stack, which an eager
    # bench job that keeps the default (off) does not need (measured: bench/README.md).
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic)


def applied_threads() -> dict[str, int]:
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def version() -> str:
    return f"torch {torch.__version__}"


def gpu_build() -> dict[str, str]:
    """GPU model, and the CUDA and cuDNN versions torch was built with; empty strings where none."""
    model = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"gpu_model": str(model), "cuda_version": str(torch.version.cuda or ""),
            "cudnn_version": str(cudnn or "")}


def tf32_flags() -> dict[str, bool]:
    return {"tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_conv": bool(torch.backends.cudnn.allow_tf32)}


def determinism_enabled() -> bool:
    return bool(torch.are_deterministic_algorithms_enabled())


def has_gpu() -> bool:
    return torch.cuda.is_available()


def pick_device() -> torch.device:
    return torch.device("cuda" if has_gpu() else "cpu")


def torch_layout(x: torch.Tensor) -> torch.Tensor:
    """NHWC images (the preprocessed arrays' layout) to NCHW (torch convolutions'); token ids and
    (user, item) pairs are taken as they are."""
    return x.permute(0, 3, 1, 2) if x.dim() == NHWC_RANK else x


def to_torch(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch_layout(torch.from_numpy(x)).contiguous().to(device)


# ---------------------------------------------------------------- model


def batch_norm(channels: int, spec) -> nn.BatchNorm2d:
    """Batch norm with the spec's constants; torch's momentum weighs the new batch (1 - Keras')."""
    return nn.BatchNorm2d(channels, eps=spec.bn_epsilon, momentum=1.0 - spec.bn_momentum)


def conv_bn(in_channels: int, filters: int, kernel: int, stride: int, spec) -> list[nn.Module]:
    """Convolution without bias (kernel // 2 zeros on every side), then batch norm."""
    return [nn.Conv2d(in_channels, filters, kernel, stride=stride, padding=kernel // 2, bias=False),
            batch_norm(filters, spec)]


class ResidualBlock(nn.Module):
    """ResNet's basic block (architecture.Residual) on NCHW input."""

    def __init__(self, layer: Residual, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        in_channels = in_shape[-1]
        self.body = nn.Sequential(*conv_bn(in_channels, layer.filters, 3, layer.stride, layer), nn.ReLU(),
                                  *conv_bn(layer.filters, layer.filters, 3, 1, layer))
        self.shortcut = (nn.Sequential(*conv_bn(in_channels, layer.filters, 1, layer.stride, layer))
                         if has_projection_shortcut(layer, in_shape) else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class MeanOverPositions(nn.Module):
    """architecture.GlobalAvgPool: NCHW images over H and W, (N, L, d) sequences over L."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)


class TokenEmbedding(nn.Module):
    """Token ids (N, L) to (N, L, dim), plus a learned embedding per position when asked."""

    def __init__(self, layer: Embedding, length: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(layer.vocab, layer.dim)
        self.positions = nn.Parameter(torch.empty(length, layer.dim).normal_()) if layer.positions else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedded = self.tokens(x)
        return embedded if self.positions is None else embedded + self.positions


class LastHiddenState(nn.Module):
    """One LSTM layer over (N, L, in), its last hidden state out.

    torch's LSTM adds two bias vectors per gate (b_ih + b_hh), Keras and the spec one: b_hh is
    held at zero and not trained, so the computation and the trained parameters are the spec's.
    """

    def __init__(self, layer: LSTM, features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, layer.units, batch_first=True)
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()
        self.lstm.bias_hh_l0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(x)
        return hidden[-1]


class NeuMF(nn.Module):
    """architecture.NCF: (N, 2) (user, item) indices to the GMF and MLP towers' outputs, concatenated."""

    def __init__(self, layer: NCF) -> None:
        super().__init__()
        self.gmf_users = nn.Embedding(layer.users, layer.gmf_dim)
        self.gmf_items = nn.Embedding(layer.items, layer.gmf_dim)
        self.mlp_users = nn.Embedding(layer.users, layer.mlp[0] // 2)
        self.mlp_items = nn.Embedding(layer.items, layer.mlp[0] // 2)
        tower: list[nn.Module] = []
        for in_units, units in zip(layer.mlp, layer.mlp[1:]):
            tower += [nn.Linear(in_units, units), nn.ReLU()]
        self.tower = nn.Sequential(*tower)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        users, items = x[:, 0], x[:, 1]
        gmf = self.gmf_users(users) * self.gmf_items(items)
        mlp = self.tower(torch.cat([self.mlp_users(users), self.mlp_items(items)], dim=-1))
        return torch.cat([gmf, mlp], dim=-1)


def encoder_layer(layer: Encoder, dim: int) -> nn.Module:
    """architecture.Encoder: post-norm, ReLU feed-forward, biases everywhere, no dropout inside."""
    return nn.TransformerEncoderLayer(dim, layer.heads, dim_feedforward=layer.ff, dropout=0.0, activation="relu",
                                      layer_norm_eps=layer.epsilon, batch_first=True, norm_first=False)


def torch_layers(layer: Layer, in_shape: tuple[int, ...]) -> list[nn.Module]:
    """Translate one spec into PyTorch modules; `in_shape` gives input sizes.

    PyTorch needs the input channels/features explicitly, Keras infers them,
    so the builder passes the walked shape in.
    """
    if isinstance(layer, Conv):
        return [nn.Conv2d(in_shape[-1], layer.filters, layer.kernel, stride=layer.stride, padding=layer.padding),
                nn.ReLU()]
    if isinstance(layer, ConvBN):
        return [*conv_bn(in_shape[-1], layer.filters, layer.kernel, layer.stride, layer), nn.ReLU()]
    if isinstance(layer, Residual):
        return [ResidualBlock(layer, in_shape)]
    if isinstance(layer, MaxPool):
        return [nn.MaxPool2d(layer.size)]
    if isinstance(layer, GlobalAvgPool):
        return [MeanOverPositions((2, 3) if len(in_shape) == 3 else (1,))]
    if isinstance(layer, Flatten):
        # Flattens NCHW in (C, H, W) order; Keras flattens (H, W, C).
        # The feature order differs, the parameter counts do not.
        return [nn.Flatten()]
    if isinstance(layer, Dense):
        modules: list[nn.Module] = [nn.Linear(in_shape[0], layer.units)]
        if layer.activation == "relu":
            modules.append(nn.ReLU())
        elif layer.activation is not None:
            raise TypeError(f"unsupported activation {layer.activation!r}")
        return modules
    if isinstance(layer, Dropout):
        return [nn.Dropout(layer.rate)]
    if isinstance(layer, Embedding):
        return [TokenEmbedding(layer, in_shape[0])]
    if isinstance(layer, Encoder):
        return [encoder_layer(layer, in_shape[-1])]
    if isinstance(layer, LSTM):
        return [LastHiddenState(layer, in_shape[-1])]
    if isinstance(layer, NCF):
        return [NeuMF(layer)]
    raise TypeError(f"unsupported layer spec {layer!r}")


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model of `model_cfg` (config/model) for NCHW inputs (input_shape given as NHWC, as for Keras), returning logits.

    Weights use PyTorch's default initialisers, deliberately not matched to Keras'.
    """
    modules: list[nn.Module] = []
    for layer, in_shape, _ in layer_shapes(model_cfg, input_shape, num_classes):
        modules += torch_layers(layer, in_shape)
    return nn.Sequential(*modules)


def load_trained_model(model_dir: Path, model_cfg, input_shape, num_classes: int,
                       device: torch.device) -> nn.Module:
    """The saved state dict rebuilt into its architecture, in eval mode."""
    model = build_model(model_cfg, tuple(input_shape), num_classes).to(device)
    model.load_state_dict(torch.load(Path(model_dir) / MODEL_FILE, map_location=device))
    return model.eval()


# ---------------------------------------------------------------- training adapter


def make_optimizer(trainer_cfg, parameters) -> torch.optim.Optimizer:
    if trainer_cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=trainer_cfg.lr, eps=trainer_cfg.adam_epsilon)
    return torch.optim.SGD(parameters, lr=trainer_cfg.lr, momentum=trainer_cfg.momentum)


class Adapter:
    """The training loop's view of torch: a plain loop over pre-loaded tensors."""

    framework = "torch"

    def __init__(self, model_cfg, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.torch_device = pick_device()
        self.model = build_model(model_cfg, tuple(input_shape), num_classes).to(self.torch_device)
        self.optimizer = make_optimizer(trainer_cfg, self.model.parameters())

    @property
    def parameter_count(self) -> int:
        """Trainable parameters (not batch norm's running statistics, not the LSTM's held-at-zero bias)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def device(self) -> str:
        return self.torch_device.type

    def reseed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def train_epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray | None, should_stop) -> tuple[float, float]:
        """One epoch over x[order] (order None: x is already in training order)."""
        inputs = to_torch(x, self.torch_device)
        labels = torch.from_numpy(y).to(self.torch_device)
        order = np.arange(len(x)) if order is None else order
        order_t = torch.from_numpy(order).to(self.torch_device)
        batch_size = self.trainer_cfg.batch_size
        self.model.train()
        loss_sum = torch.zeros((), device=self.torch_device)
        correct = torch.zeros((), dtype=torch.int64, device=self.torch_device)
        seen = 0
        for start in range(0, len(order), batch_size):
            if should_stop():
                break
            index = order_t[start:start + batch_size]
            batch_x, batch_y = inputs[index], labels[index]
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.model(batch_x)
            loss = F.cross_entropy(logits, batch_y)
            loss.backward()
            self.optimizer.step()
            # Accumulate on the device: a .item() per step would force a sync every step.
            loss_sum += loss.detach() * len(index)
            correct += (logits.detach().argmax(dim=1) == batch_y).sum()
            seen += len(index)
        seen = max(seen, 1)
        return float(loss_sum) / seen, int(correct) / seen

    def predict_logits(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return predict_in_batches(self.model, x, batch_size, self.torch_device)

    def save_checkpoint(self, directory: Path) -> None:
        torch.save(
            {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()},
            Path(directory) / CHECKPOINT_FILE,
        )

    def load_checkpoint(self, directory: Path) -> None:
        state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location=self.torch_device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save_model(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(directory) / MODEL_FILE
        torch.save(self.model.state_dict(), path)
        return path


@torch.no_grad()
def predict_in_batches(model: nn.Module, x: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Logits of an NHWC array, `batch_size` samples per call, in eval mode."""
    model.eval()
    return predict_batched(lambda batch: model(to_torch(batch, device)).cpu().numpy(), x, batch_size)


# ---------------------------------------------------------------- evaluation and export


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    """The saved model as a function (NHWC arrays, batch size) -> logits, and its device."""
    device = pick_device()
    model = load_trained_model(model_dir, model_cfg, input_shape, num_classes, device)
    return lambda x, batch_size: predict_in_batches(model, x, batch_size, device), device.type


def export(model_dir: Path, target: Path, sample: np.ndarray, model_cfg, num_classes: int):
    """An ExportedProgram with a dynamic batch, saved as .pt2 and reloaded with `torch.export.load`.

    Returns (path, load seconds, first-prediction seconds at batch 1, a batch predict function).
    """
    device = torch.device("cpu")
    model = load_trained_model(model_dir, model_cfg, sample.shape[1:], num_classes, device)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (to_torch(sample[:2], device),), dynamic_shapes=({0: batch},))
    target.mkdir(parents=True, exist_ok=True)
    archive = target / EXPORT_FILE
    torch.export.save(program, archive)
    start = time.perf_counter()
    loaded = torch.export.load(archive).module()
    load_time = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        loaded(to_torch(sample[:1], device))
    first_prediction = time.perf_counter() - start

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return loaded(to_torch(x, device)).numpy()

    return target, load_time, first_prediction, predict


# ---------------------------------------------------------------- bench hooks


def prepare_process() -> None:
    """Before CUDA starts: deterministic cuBLAS needs its workspace setting."""
    name, value = CUBLAS_WORKSPACE
    os.environ.setdefault(name, value)


def before_build(precision: str) -> str:
    """torch has no global dtype policy; bf16 autocast wraps the model after it is built."""
    return "bfloat16 autocast" if precision == "bf16" else "none"


def mixed_precision_policy(bench_policy: str) -> str:
    """torch has no global policy to read back: autocast is per region, and the bench records what it wrapped."""
    return bench_policy


class Autocast(nn.Module):
    """Runs the wrapped model under bf16 autocast; logits come back in fp32 for the loss."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def apply_mode(adapter, mode: str, precision: str) -> None:
    if precision == "bf16":
        adapter.model = Autocast(adapter.model, adapter.torch_device.type)
    if mode == "compile":
        adapter.model = torch.compile(adapter.model)


def sync() -> Callable[[], None]:
    return torch.cuda.synchronize if has_gpu() else no_sync


def predictor(adapter) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy in, NumPy out, through the pipeline's inference function (evaluate uses it).

    One call is one batch; the result is copied to the host, so it has finished.
    """
    return lambda x: predict_in_batches(adapter.model, x, len(x), adapter.torch_device)


def reset_device_peak() -> None:
    if has_gpu():
        torch.cuda.reset_peak_memory_stats()


def device_peak_mb() -> float:
    if not has_gpu():
        return math.nan
    return torch.cuda.max_memory_allocated() / BYTES_PER_MIB


def compile_cache_note() -> str:
    """Inductor FX-graph cache hits and misses so far (a warm cache compiles much faster)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return ""
    inductor = counters.get("inductor", {})
    hits, misses = inductor.get("fxgraph_cache_hit", 0), inductor.get("fxgraph_cache_miss", 0)
    if not hits and not misses:
        return ""
    return f"fxgraph cache: {hits} hit, {misses} miss"


# ---------------------------------------------------------------- MLflow


class PreprocessedInput(nn.Module):
    """Takes the preprocessed arrays as they are (images NHWC, like the Keras model), so every logged model
    takes the same input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch_layout(x))


def mlflow_model(model: nn.Module, example: np.ndarray):
    """(flavour, its keyword arguments, the model's output on the example) for MLflow's Model.log.

    A CPU copy of the model in eval mode behind PreprocessedInput, exported as a `pt2`
    graph, which loads without this package.
    """
    import mlflow.pytorch

    wrapped = PreprocessedInput(copy.deepcopy(model).cpu()).eval()
    output = wrapped(torch.from_numpy(example)).detach().numpy()
    return mlflow.pytorch, {"pytorch_model": wrapped, "serialization_format": "pt2"}, output
