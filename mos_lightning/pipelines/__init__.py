from .edlora import DEFAULT_NEGATIVE_PROMPT, EDLoRAPipeline
from .schedulers import SchedulerName, make_scheduler

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "EDLoRAPipeline", "SchedulerName", "make_scheduler"]
