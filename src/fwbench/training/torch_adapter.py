"""PyTorch side of the training loop: a plain loop over pre-loaded tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fwbench.models.torch_models import build_torch_model

CHECKPOINT_FILE = "state.pt"
MODEL_FILE = "model.pt"


def make_optimizer(trainer_cfg, parameters) -> torch.optim.Optimizer:
    if trainer_cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=trainer_cfg.lr, eps=trainer_cfg.adam_epsilon)
    return torch.optim.SGD(parameters, lr=trainer_cfg.lr, momentum=trainer_cfg.momentum)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_nchw(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """The preprocessed arrays are NHWC (Keras' layout); torch convolutions want NCHW."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(device)


class TorchAdapter:
    framework = "torch"

    def __init__(self, model_name: str, input_shape, num_classes: int, trainer_cfg) -> None:
        self.trainer_cfg = trainer_cfg
        self.model_name = model_name
        self.torch_device = pick_device()
        self.model = build_torch_model(model_name, tuple(input_shape), num_classes).to(self.torch_device)
        self.optimizer = make_optimizer(trainer_cfg, self.model.parameters())

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def device(self) -> str:
        return self.torch_device.type

    def reseed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def train_epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray | None, should_stop) -> tuple[float, float]:
        """One epoch over x[order] (order None: x is already in training order)."""
        inputs = to_nchw(x, self.torch_device)
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

    @torch.no_grad()
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
def predict_in_batches(model: torch.nn.Module, x: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    model.eval()
    outputs = []
    for start in range(0, len(x), batch_size):
        outputs.append(model(to_nchw(x[start:start + batch_size], device)).cpu().numpy())
    return np.concatenate(outputs)


def load_torch_logits_fn(model_dir: Path, model_name: str, input_shape, num_classes: int):
    """The saved state dict rebuilt into its architecture, as a function NHWC arrays -> logits, and its device."""
    device = pick_device()
    model = build_torch_model(model_name, tuple(input_shape), num_classes).to(device)
    model.load_state_dict(torch.load(Path(model_dir) / MODEL_FILE, map_location=device))
    return lambda x, batch_size: predict_in_batches(model, x, batch_size, device), device.type
