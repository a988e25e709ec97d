"""The project's defaults, defined once: the base model, the concept placeholder, the paper's negative prompt."""

BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
"""Hub id of Stable Diffusion 1.5, the base the paper tunes and fuses on."""

PLACEHOLDER = "<TOK>"
"""The string in captions and prompts that stands for a concept's tokens."""

NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality"
)
"""The paper's negative prompt (supplementary §2.1)."""
