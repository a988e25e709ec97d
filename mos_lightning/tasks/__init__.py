from .edlora import EDLoRATask
from .evaluation import EvalMethod, EvalTask
from .fusion import FusionTask
from .regional import RegionalTask
from .sampling import SamplingTask

__all__ = ["EDLoRATask", "EvalMethod", "EvalTask", "FusionTask", "RegionalTask", "SamplingTask"]
