from .edlora import DEFAULT_NEGATIVE_PROMPT, EDLoRAPipeline, to_uint8
from .schedulers import SchedulerName, make_scheduler

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "EDLoRAPipeline", "SchedulerName", "make_scheduler", "to_uint8"]
