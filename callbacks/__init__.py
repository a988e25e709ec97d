"""Lightning callbacks of mos-lightning (imported as ``mos_lightning.callbacks``): optional,
order-independent work such as sample logging, image writing and metrics export."""

from .clip_metrics import CLIPMetrics
from .image_writer import ImageWriter, make_grid, save_png
from .sample_logger import SampleLogger

__all__ = ["CLIPMetrics", "ImageWriter", "SampleLogger", "make_grid", "save_png"]
