"""Mix-of-Show (Gu et al., NeurIPS 2023) as PyTorch Lightning modules: ED-LoRA tuning, fusion, sampling."""

__version__ = "0.1.0"
