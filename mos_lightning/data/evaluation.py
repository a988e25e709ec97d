"""Evaluation prompts × seeds per concept (the paper's protocol), sharded over processes for ``test``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from ..defaults import PLACEHOLDER
from .concept import IMAGE_SUFFIXES, open_image
from .eval_prompts import GROUPS, PAPER_PROMPTS
from .prompts import check_seeds, read_prompts, read_text, read_yaml, slug
from .sharding import ShardedItems


@dataclass
class EvalConceptSpec:
    """One concept to evaluate, as written in a config."""

    name: str
    """Concept name (as in its ED-LoRA file / the fused model's token table)."""
    class_word: str
    """Class word (``dog``, ``man``…): replaces ``<TOK>`` in the text-alignment prompt and in the bound runs."""
    reference_dir: str
    """Folder of the concept's reference (training) images for image alignment."""
    category: str = "characters"
    """Which of the paper's prompt sets: characters, pets, table, chair, vase, scene."""
    prompt_file: str | None = None
    """Own prompts instead: YAML mapping group → list of prompts; a .txt of four blank-line-separated blocks (the
    authors' ``benchmark_prompts`` files: the paper's groups in order); or a .txt/.yaml list (group ``custom``)."""


@dataclass(frozen=True)
class EvalItem:
    """One image to make and score."""

    concept: str
    group: str
    prompt_index: int
    prompt: str  # with <TOK>
    seed: int
    class_prompt: str  # <TOK> → class word: the text-alignment prompt (and the bound runs' prompt)

    @property
    def name(self) -> str:
        """Image path below a method's folder."""
        return f"{self.concept}/{self.prompt_index:02d}-{slug(self.prompt)}/seed{self.seed:06d}.png"


def benchmark_blocks(path: Path) -> list[list[str]] | None:
    """The prompt blocks of a ``.txt`` in the authors' ``datasets/benchmark_prompts`` layout (one block per group,
    in the paper's group order, separated by blank lines), or None when the file is not laid out that way."""
    if not path.is_file() or path.suffix != ".txt":
        return None
    blocks = [[line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
              for block in read_text(path, "prompt file").strip().split("\n\n")]
    blocks = [b for b in blocks if b]
    return blocks if len(blocks) == len(GROUPS) else None


def concept_prompts(spec: EvalConceptSpec) -> list[tuple[str, str]]:
    """``(group, prompt)`` pairs of a concept, in order."""
    if spec.prompt_file:
        path = Path(spec.prompt_file)
        data = read_yaml(path, "prompt file") if path.suffix in (".yaml", ".yml") and path.is_file() else None
        blocks = benchmark_blocks(path) if data is None else None
        if isinstance(data, dict) and "prompts" not in data:
            pairs = [(group, p) for group, prompts in data.items() for p in prompts]
        elif blocks:  # the authors' benchmark_prompts layout: the four groups as blank-line-separated blocks
            pairs = [(group, p) for group, block in zip(GROUPS, blocks, strict=True) for p in block]
        else:
            pairs = [("custom", p) for p in read_prompts(path)]
    else:
        if spec.category not in PAPER_PROMPTS:
            raise ValueError(f"concept {spec.name}: unknown category {spec.category!r}; choose one of "
                             f"{sorted(PAPER_PROMPTS)} or give a prompt_file")
        pairs = [(group, p) for group in GROUPS for p in PAPER_PROMPTS[spec.category][group]]
    missing = [p for _, p in pairs if PLACEHOLDER not in p]
    if missing:
        raise ValueError(f"concept {spec.name}: prompt(s) without {PLACEHOLDER}: {missing[:3]}")
    return pairs


def reference_images(spec: EvalConceptSpec) -> list[Path]:
    folder = Path(spec.reference_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"concept {spec.name}: reference_dir {folder} does not exist")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"concept {spec.name}: no images in reference_dir {folder}")
    return images


def check_reference_images(spec: EvalConceptSpec) -> None:
    """Open every reference image now (a few per concept), so a damaged one fails before any model loads."""
    for path in reference_images(spec):
        try:
            open_image(path, "RGB")
        except ValueError as error:
            raise ValueError(f"concept {spec.name}: {error}") from None


class EvalDataModule(pl.LightningDataModule):
    """Every concept's evaluation prompts × seeds (paper: 20 prompts × seeds 1..50 = 1000 images per concept).

    Under DDP each process takes every world-size-th item (no repeats, no gaps); shorter shards are padded
    with ``None`` items that the task skips.
    """

    def __init__(
        self,
        concepts: list[EvalConceptSpec] | None = None,
        seeds: list[int] | None = None,
        prompts_per_group: int | None = None,
        batch_size: int = 8,
    ):
        """
        Args:
            concepts: Concepts to evaluate: ``{name, class_word, reference_dir, category: characters, prompt_file: null}``.
            seeds: Seeds of every prompt (default 1..50, the paper's).
            prompts_per_group: Use only the first N prompts of each group (quick runs; default: all).
            batch_size: Images per step on each process.
        """
        super().__init__()
        self.specs = [c if isinstance(c, EvalConceptSpec) else EvalConceptSpec(**c) for c in concepts or []]
        if not self.specs:
            raise ValueError("no concepts to evaluate: list them under data.init_args.concepts")
        names = [c.name for c in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"concept names must be unique, got {names}")
        self.seeds = check_seeds(list(seeds) if seeds else list(range(1, 51)), "data.init_args.seeds")
        self.prompts_per_group = prompts_per_group
        self.batch_size = batch_size
        self.items: list[EvalItem] = []

    def build_items(self) -> list[EvalItem]:
        items = []
        for spec in self.specs:
            check_reference_images(spec)  # fail early on a missing folder or a damaged image
            counts: dict[str, int] = {}
            index = 0
            for group, prompt in concept_prompts(spec):
                counts[group] = counts.get(group, 0) + 1
                if self.prompts_per_group and counts[group] > self.prompts_per_group:
                    continue
                class_prompt = prompt.replace(PLACEHOLDER, spec.class_word)
                items += [EvalItem(spec.name, group, index, prompt, seed, class_prompt) for seed in self.seeds]
                index += 1
        return items

    def setup(self, stage: str) -> None:
        if not self.items:
            self.items = self.build_items()

    def shard(self, rank: int, world: int) -> ShardedItems:
        return ShardedItems([asdict(i) for i in self.items], rank, world, filler=None)

    def test_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return DataLoader(self.shard(rank, world), batch_size=self.batch_size, collate_fn=list, num_workers=0)
