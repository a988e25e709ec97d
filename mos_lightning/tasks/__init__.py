from .edlora import EDLoRATask
from .fusion import FusionTask
from .sampling import SamplingTask

__all__ = ["EDLoRATask", "FusionTask", "SamplingTask"]
