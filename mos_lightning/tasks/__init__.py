from .edlora import EDLoRATask
from .sampling import SamplingTask

__all__ = ["EDLoRATask", "SamplingTask"]
