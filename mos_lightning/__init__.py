"""Mix-of-Show (Gu et al., NeurIPS 2023) as PyTorch Lightning modules: ED-LoRA tuning, fusion, sampling."""

# Raised whenever a file format or a default that changes results changes (CHANGELOG.md says what changed).
__version__ = "0.2.0"
