"""The paper's evaluation prompts (supplementary Fig. 1): per concept category, four groups of five.

``<TOK>`` stands for the concept (its tokens, or its class word for the bound runs).
"""

from __future__ import annotations

GROUPS = ("recontextualization", "restylization", "interaction", "property_change")

_RESTYLIZATION = [
    "A <TOK>, cyberpunk 2077, 4K, 3d render in unreal engine",
    "A watercolor painting of a <TOK>",
    "A painting of a <TOK> in the style of Vincent Van Gogh",
    "A painting of a <TOK> in the style of Claude Monet",
    "A <TOK> in the style of Pixel Art",
]
_PETS = {
    "recontextualization": [
        "A <TOK>, in the swimming pool",
        "A <TOK>, in front of Eiffel tower",
        "A <TOK>, near the mount fuji",
        "A <TOK>, in the forest",
        "A <TOK>, walking on the street",
    ],
    "restylization": _RESTYLIZATION,
    "interaction": [
        "A <TOK> sit on the chair",
        "A <TOK> on the boat",
        "A <TOK>, wearing a headphone",
        "A <TOK>, wearing a sunglass",
        "A <TOK> playing with a ball",
    ],
    "property_change": [
        "A sad <TOK>",
        "An angry <TOK>",
        "A running <TOK>",
        "A jumping <TOK>",
        "A <TOK> is lying down",
    ],
}
_THINGS = {  # chair, vase and scene share their prompts
    "recontextualization": [
        "A <TOK>, in the snow",
        "A <TOK>, at night",
        "A <TOK>, in autumn",
        "A <TOK>, in a sunny day",
        "A <TOK>, in thunder and lightning",
    ],
    "restylization": _RESTYLIZATION,
    "interaction": [
        "A girl near the <TOK>",
        "A boy near the <TOK>",
        "A dog near the <TOK>",
        "A cat near the <TOK>",
        "Many people near the <TOK>",
    ],
    "property_change": [
        "A <TOK> in rainbow colors",
        "A <TOK> made of metal",
        "A close view of <TOK>",
        "A top view of <TOK>",
        "A bottom view of <TOK>",
    ],
}

PAPER_PROMPTS: dict[str, dict[str, list[str]]] = {
    "characters": {
        "recontextualization": [
            "A photo of <TOK> on the beach, small waves, detailed symmetric face, beautiful composition",
            "A <TOK>, in front of Eiffel tower",
            "A <TOK>, near the mount fuji",
            "A <TOK>, in the forest",
            "A <TOK>, walking on the street",
        ],
        "restylization": _RESTYLIZATION,
        "interaction": [
            "A <TOK> sit on the chair",
            "A <TOK> ride a horse",
            "A <TOK>, wearing a headphone",
            "A <TOK>, wearing a sunglass",
            "A <TOK>, wearing a Santa hat",
        ],
        "property_change": [
            "A smiling <TOK>",
            "An angry <TOK>",
            "A running <TOK>",
            "A jumping <TOK>",
            "A <TOK> is lying down",
        ],
    },
    "pets": _PETS,
    "table": _PETS,  # the paper's table column repeats the pets prompts
    "chair": _THINGS,
    "vase": _THINGS,
    "scene": _THINGS,
}
