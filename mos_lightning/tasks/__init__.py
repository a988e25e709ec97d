from .edlora import EDLoRATask

__all__ = ["EDLoRATask"]
