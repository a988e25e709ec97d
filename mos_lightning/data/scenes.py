"""Scene specs for regional sampling (``mos-lightning predict``): context prompt, regions, adapter conditions.

A scene file is YAML: ``scenes:`` then a list of

    - name: trio                         # unique; names the output folder
      prompt: three people near the castle, 4K, high quality     # the global (context) prompt
      negative_prompt: ...               # optional (default: the paper's)
      height: 512                        # optional (default: the model's native size)
      width: 768
      seeds: [1, 2]                      # optional (default [0])
      regions:
        - prompt: <potter>, standing     # <name> = a loaded concept
          box: [0.1, 0.0, 1.0, 0.33]     # [top, left, bottom, right]: fractions, or pixels when any value > 1
          negative_prompt: ...           # optional (default: the scene's)
      conditions:                        # optional T2I-Adapter conditions
        - adapter: keypose               # a name from the task's `adapters`
          image: poses/trio.png          # relative to the scene file
          weight: 1.0                    # everywhere, except in these boxes (the reference's region_*_adaptor_weight):
          regions:                       # optional
            - {box: [0.1, 0.66, 1.0, 1.0], weight: 0.8}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..attention.regions import Region, box_fractions
from .prompts import ImageItemsDataModule, SampleItem, check_seeds

CONCEPT_REFERENCE = re.compile(r"<[^<>\s]+>")


@dataclass
class Condition:
    adapter: str
    image: str
    weight: float = 1.0
    regions: list[tuple[tuple, float]] = field(default_factory=list)  # (box, weight): the adapter's weight in a box


@dataclass
class Scene:
    name: str
    prompt: str
    regions: list[Region] = field(default_factory=list)
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    conditions: list[Condition] = field(default_factory=list)


def parse_scene(raw: dict, base_dir: Path, index: int) -> Scene:
    where = f"scene {index} ({raw.get('name', '?')!r})"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(raw) - {"name", "prompt", "negative_prompt", "height", "width", "seeds", "regions", "conditions"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
    if not str(raw.get("name", "")).strip() or not str(raw.get("prompt", "")).strip():
        raise ValueError(f"{where}: needs a non-empty `name` and `prompt`")
    regions = []
    for k, r in enumerate(raw.get("regions") or []):
        if not str(r.get("prompt", "")).strip():
            raise ValueError(f"{where}, region {k}: empty prompt")
        if "box" not in r:
            raise ValueError(f"{where}, region {k}: needs a box [top, left, bottom, right]")
        regions.append(Region(r["prompt"], tuple(r["box"]), r.get("negative_prompt")))
    conditions = []
    for k, c in enumerate(raw.get("conditions") or []):
        image = Path(c.get("image", ""))
        image = image if image.is_absolute() else base_dir / image
        if not image.is_file():
            raise FileNotFoundError(f"{where}, condition {k}: image {image} does not exist")
        region_weights = []
        for j, r in enumerate(c.get("regions") or []):
            if not isinstance(r, dict) or "box" not in r or "weight" not in r:
                raise ValueError(f"{where}, condition {k}, region {j}: needs a box and a weight")
            region_weights.append((tuple(r["box"]), float(r["weight"])))
        conditions.append(Condition(str(c.get("adapter", "")), str(image), float(c.get("weight", 1.0)),
                                    region_weights))
    return Scene(str(raw["name"]), str(raw["prompt"]), regions, raw.get("negative_prompt"), raw.get("height"),
                 raw.get("width"), check_seeds(list(raw.get("seeds") or [0]), f"{where}: seeds"), conditions)


SCENE_FORMAT_VERSION = 1  # scene files may say `version: 1` beside `scenes:` (none means 1)

def read_scenes(path: str | Path) -> list[Scene]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"scene file {path} is not valid YAML: {error}") from None
    raw = data.get("scenes") if isinstance(data, dict) else data
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected `scenes:` with a list of scenes")
    version = data.get("version", 1) if isinstance(data, dict) else 1
    if not isinstance(version, int) or version > SCENE_FORMAT_VERSION:
        raise ValueError(f"{path} has scene format version {version!r}; this mos-lightning reads up to "
                         f"{SCENE_FORMAT_VERSION}: upgrade it")
    return [parse_scene(r, path.parent, i) for i, r in enumerate(raw)]


def check_scenes(scenes: list[Scene], native: tuple[int, int], known: set[str], adapters: set[str],
                 multiple: int = 8) -> None:
    """Model-dependent checks, before any sampling: sizes, boxes inside the image, concepts known, adapters named."""
    for index, scene in enumerate(scenes):
        where = f"scene {index} ({scene.name!r})"
        height, width = scene.height or native[0], scene.width or native[1]
        if height % multiple or width % multiple:
            raise ValueError(f"{where}: {height}x{width} is not a multiple of {multiple}")
        for label, text in [("prompt", scene.prompt)] + [(f"region {k}", r.prompt) for k, r in enumerate(scene.regions)]:
            unknown = [t for t in CONCEPT_REFERENCE.findall(text) if t not in known]
            if unknown:
                raise ValueError(f"{where}, {label}: {unknown} are not concepts or tokens of the model "
                                 f"(known: {sorted(known)})")
        for k, region in enumerate(scene.regions):
            try:
                box_fractions(region.box, height, width)
            except ValueError as error:
                raise ValueError(f"{where}, region {k}: {error}") from None
        for k, c in enumerate(scene.conditions):
            if c.adapter not in adapters:
                raise ValueError(f"{where}, condition {k}: adapter {c.adapter!r} is not configured "
                                 f"(model.init_args.adapters has {sorted(adapters)})")
            for j, (box, _) in enumerate(c.regions):
                try:
                    box_fractions(box, height, width)
                except ValueError as error:
                    raise ValueError(f"{where}, condition {k}, region {j}: {error}") from None


class SceneDataModule(ImageItemsDataModule):
    """Scenes × their seeds for regional sampling; images go to ``<output_dir>/<index>-<scene name>/seed<N>.png``
    (with a ``.boxes.png`` debug image beside each)."""

    def __init__(self, scene_file: str | None = None, scenes: list[dict] | None = None,
                 output_dir: str = "outputs/regional", skip_existing: bool = True):
        """
        Args:
            scene_file: YAML file with ``scenes:`` (see :mod:`mos_lightning.data.scenes`).
            scenes: Scenes written inline in the config instead (same keys; condition images relative to the cwd).
            output_dir: Image folder (the image writer writes here by default).
            skip_existing: Leave out images already in ``output_dir`` (resume).
        """
        super().__init__()
        if bool(scene_file) == bool(scenes):
            raise ValueError("give exactly one of scene_file and scenes")
        self.scene_file, self._raw = scene_file, scenes
        self.output_dir, self.skip_existing, self.batch_size = Path(output_dir), skip_existing, 1
        self.scenes: list[Scene] = []
        self.items: list[SampleItem] = []

    def load(self) -> list[Scene]:
        if not self.scenes:
            scenes = read_scenes(self.scene_file) if self.scene_file else [
                parse_scene(r, Path.cwd(), i) for i, r in enumerate(self._raw)]
            names = [s.name for s in scenes]
            if len(set(names)) != len(names):
                raise ValueError(f"scene names must be unique, got {names}")
            self.scenes = scenes
        return self.scenes

    @property
    def all_items(self) -> list[SampleItem]:
        return [SampleItem(scene.name, i, seed) for i, scene in enumerate(self.load()) for seed in scene.seeds]
