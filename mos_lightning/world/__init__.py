"""A miniature world where the method can be seen and measured on a CPU: seeded pictures of simple things
(balls, cubes, cones, rings in eight colours and four patterns, on six backgrounds, one to three per picture,
each with an exact caption), and *concepts* — particular things no caption of the world describes, with a few
photo-like views each in the project's concept-folder format (images, captions with ``<TOK>``, masks).

    python -m mos_lightning.world concepts outputs/world/concepts     # every concept's folder
    python -m mos_lightning.world sample outputs/world/preview 16      # a few captioned world pictures
    python -m mos_lightning.world.train base|clip OUT                  # the shipped models (demo/world/)
    python -m mos_lightning.world.check detector|clip|base             # how well they (and the judge) see
    python -m mos_lightning.world.claims outputs/claims --jobs 2       # the paper's claims, measured (CLAIMS.md)
"""

from .concepts import CONCEPTS, ConceptSpec, concept_views, write_concept
from .scenes import BACKGROUNDS, CLASSES, COLOURS, PATTERNS, Scene, Thing, caption, random_scene, render

__all__ = ["BACKGROUNDS", "CLASSES", "COLOURS", "CONCEPTS", "PATTERNS", "ConceptSpec", "Scene", "Thing", "caption",
           "concept_views", "random_scene", "render", "write_concept"]
