"""Lightning callbacks of mos-lightning (imported as ``mos_lightning.callbacks``): optional,
order-independent work such as sample logging, image writing and report writing."""

from .eval_report import EvalReport
from .image_writer import ImageWriter
from .progress import StepProgressBar
from .sample_logger import SampleLogger

__all__ = ["EvalReport", "ImageWriter", "SampleLogger", "StepProgressBar"]
