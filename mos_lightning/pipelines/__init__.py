from .edlora import DEFAULT_NEGATIVE_PROMPT, EDLoRAPipeline

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "EDLoRAPipeline"]
