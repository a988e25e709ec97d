"""Caption templates of the reference implementation (its ``EnhanceText``): every training caption is wrapped in
one drawn at random, by the concept's kind. Chosen with ``data.init_args.prompt_templates: human`` (or ``object``,
``style``), or given as a list of your own."""

HUMAN = [
    "a photo of a {}", "a photo of one {}", "a photo of the {}", "the photo of a {}", "a rendering of a {}",
    "a rendition of the {}", "a rendition of a {}", "a cropped photo of the {}", "a cropped photo of a {}",
    "a bad photo of the {}", "a bad photo of a {}", "a photo of a weird {}", "a weird photo of a {}",
    "a bright photo of the {}", "a good photo of the {}", "a photo of a nice {}", "a good photo of a {}",
    "a photo of a cool {}", "a bright photo of the {}",
]
OBJECT = [
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}", "a photo of a clean {}",
    "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}", "a photo of the cool {}",
    "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}", "a photo of the {}",
    "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}", "a rendition of the {}",
    "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}", "a good photo of a {}",
    "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}", "a photo of the large {}",
    "a photo of a cool {}", "a photo of a small {}",
]
STYLE = [
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a cropped painting in the style of {}", "a good painting in the style of {}",
    "a close-up painting in the style of {}", "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}", "a large painting in the style of {}",
]
PRESETS = {"human": HUMAN, "object": OBJECT, "style": STYLE}


def resolve_templates(templates: list[str] | str | None) -> list[str]:
    """A preset's templates (``human``, ``object``, ``style``), or the given list; checked for the ``{}`` slot."""
    if isinstance(templates, str):
        if templates not in PRESETS:
            raise ValueError(f"prompt_templates {templates!r} is not a preset; choose one of {sorted(PRESETS)} or a list")
        templates = PRESETS[templates]
    for t in templates or []:
        if "{}" not in t:
            raise ValueError(f"prompt template {t!r} needs a '{{}}' where the caption goes")
    return list(templates or [])
