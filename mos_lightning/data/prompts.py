"""Prompts × seeds for sampling: reading prompt files, naming outputs, and the ``predict`` DataModule.

Every (prompt, seed) pair is one item with a stable file name, so the set of images a run makes
does not depend on the number of GPUs or the batch size, and an interrupted run resumes by
skipping items whose image already exists.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning.pytorch as pl
import yaml
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from ..atomic import check_writable


def read_text(path: Path, what: str) -> str:
    """A text file's contents; one that is not UTF-8 gets an error naming it (not a raw codec error)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text ({err}); save it as UTF-8") from None


def read_yaml(path: Path, what: str):
    """A YAML file's data; a malformed one gets an error naming it and the place."""
    try:
        return yaml.safe_load(read_text(path, what))
    except yaml.YAMLError as err:
        raise ValueError(f"{what} {path} is not valid YAML: {err}") from None


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` file (one per line; blank lines and ``#`` comments skipped) or a YAML
    file holding a list of strings (or a mapping with a ``prompts:`` list)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    if path.suffix.lower() in (".yaml", ".yml"):
        data = read_yaml(path, "prompt file")
        if isinstance(data, dict):
            data = data.get("prompts")
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ValueError(f"{path}: expected a YAML list of prompt strings (or a mapping with a 'prompts:' list)")
        prompts = [p.strip() for p in data]
    else:
        lines = (line.strip() for line in read_text(path, "prompt file").splitlines())
        prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts or not all(prompts):
        raise ValueError(f"{path}: no prompts, or an empty prompt")
    return prompts


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe, readable short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "prompt"


@dataclass(frozen=True)
class SampleItem:
    """One image to make: a prompt, its position in the prompt list, a seed, and the image's relative path."""

    prompt: str
    prompt_index: int
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.prompt_index:04d}-{slug(self.prompt)}"

    @property
    def name(self) -> str:
        return f"{self.folder}/seed{self.seed:06d}.png"


MAX_SEED = 2**64 - 1  # a torch.Generator's seed is an unsigned 64-bit number


def check_seeds(seeds, option: str) -> list[int]:
    """``seeds`` as ints, or a clear error naming ``option`` for one a generator cannot take (before any model loads)."""
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if bad:
        raise ValueError(f"{option}: seeds must be whole numbers from 0 to 2**64 - 1, got {bad[:3]}")
    return list(seeds)


def sample_items(prompts: list[str], seeds: list[int]) -> list[SampleItem]:
    """Every prompt with every seed (the paper: 20 prompts × seeds 1..50), prompt-major."""
    return [SampleItem(p, i, s) for i, p in enumerate(prompts) for s in seeds]


class SampleItems(Dataset):
    def __init__(self, items: list[SampleItem]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return asdict(self.items[index])


def collate_items(rows: list[dict]) -> dict[str, list]:
    """Keep strings and ints as plain lists (default collation would tensorise the seeds)."""
    return {key: [row[key] for row in rows] for key in rows[0]}


class ImageItemsDataModule(pl.LightningDataModule):
    """Base of the ``predict`` data modules: named image items, existing images skipped, DDP-sharded."""

    output_dir: Path
    skip_existing: bool
    batch_size: int
    num_workers: int = 0

    @property
    def all_items(self) -> list[SampleItem]:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        check_writable(self.output_dir, "--data.init_args.output_dir")
        items = self.all_items
        if self.skip_existing:
            items = [item for item in items if not (self.output_dir / item.name).is_file()]
            done = len(self.all_items) - len(items)
            if done:
                rank_zero_info(f"{done} of {len(self.all_items)} images already exist in {self.output_dir}; "
                               f"{len(items)} to make")
        self.items = items

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            SampleItems(self.items), batch_size=self.batch_size, shuffle=False,
            num_workers=self.num_workers, collate_fn=collate_items,
        )


class PromptDataModule(ImageItemsDataModule):
    """Prompts × seeds for ``mos-lightning predict``; DDP shards the items across processes.

    Each image's seed is its own (``seed + k`` for sample k of every prompt), so an image depends only
    on its (prompt, seed), never on the number of GPUs or the batch size.
    """

    def __init__(
        self,
        prompts: list[str] | None = None,
        prompt_file: str | None = None,
        num_samples: int = 4,
        seed: int = 0,
        seeds: list[int] | None = None,
        batch_size: int = 1,
        output_dir: str = "outputs/samples",
        skip_existing: bool = True,
        num_workers: int = 0,
    ):
        """
        Args:
            prompts: Prompts to sample; ``<TOK>`` stands for the only loaded concept, ``<name>`` for concept ``name``.
            prompt_file: A ``.txt`` (one prompt per line) or YAML list of prompts; when given it *replaces*
                ``prompts`` (so a config's prompts never mix into yours).
            num_samples: Images per prompt.
            seed: Seed of the first image of every prompt; image k uses ``seed + k``.
            seeds: Explicit seeds instead of ``seed``/``num_samples`` (the paper's evaluation uses 1..50).
            batch_size: Images per sampling call on each process.
            output_dir: Where the images go (``<prompt index>-<prompt>/seed<seed>.png``); the image writer
                callback writes here unless given its own folder.
            skip_existing: Leave out items whose image is already in ``output_dir``, so an interrupted run resumes.
            num_workers: DataLoader workers (the items are tiny; 0 is right almost always).
        """
        super().__init__()
        if num_samples < 1 or batch_size < 1:
            raise ValueError("num_samples and batch_size must be at least 1")
        if not prompts and not prompt_file:
            raise ValueError("no prompts: give `prompts` (a list) or `prompt_file` (.txt or .yaml)")
        if not all(p.strip() for p in prompts or []):
            raise ValueError("prompts must not be empty strings")
        self._prompts, self.prompt_file = list(prompts or []), prompt_file
        self.seeds = check_seeds(list(seeds) if seeds else [seed + k for k in range(num_samples)],
                                 "data.init_args.seeds (or seed + num_samples)")
        self.batch_size = batch_size
        self.output_dir = Path(output_dir)
        self.skip_existing = skip_existing
        self.num_workers = num_workers
        self.items: list[SampleItem] = []

    @property
    def prompts(self) -> list[str]:
        """The prompt file's prompts (read when first needed) if there is one, else the given prompts."""
        if not self.prompt_file:
            return self._prompts
        if not hasattr(self, "_file_prompts"):
            self._file_prompts = read_prompts(self.prompt_file)
        return self._file_prompts

    @property
    def all_items(self) -> list[SampleItem]:
        return sample_items(self.prompts, self.seeds)
