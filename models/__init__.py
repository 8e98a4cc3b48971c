"""Plain PyTorch: the frozen encoder, the captioner, beam search and inversion. No Prefect, no DuckDB."""

import torch


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise (ONENET_DEVICE overrides)."""
    import os

    if name := os.environ.get("ONENET_DEVICE"):
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
