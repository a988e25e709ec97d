from .edlora import EDLoRAPipeline, to_uint8
from .schedulers import SchedulerName, make_scheduler

__all__ = ["EDLoRAPipeline", "SchedulerName", "make_scheduler", "to_uint8"]
