"""One tiny model of each shipped family, built from files saved as the releases save them,
for tests that must hold for every family (the compiled step)."""
from __future__ import annotations

from pathlib import Path

from zipar import api
from zipar.conditions import class_condition
from zipar.families.base import Condition

from .tiny_gpt import make_tiny_gpt, save_official_gpt

FAMILIES = ("llamagen", "janus-pro", "emu3", "lumina-mgpt")


def load_tiny(name: str, root: Path):
    """(model, condition of two images, grid) for a family; the chat families need transformers."""
    root.mkdir(parents=True, exist_ok=True)
    if name == "llamagen":
        path = root / "c2i_tiny_96.pt"  # 96 px over VQ-16: a 6x6 grid
        save_official_gpt(make_tiny_gpt("c2i", seed=2), path)
        model = api.load_ar_model(path, "cpu", "fp32")
        cond = class_condition([3, 7])
    elif name == "janus-pro":
        from .chat_fixtures import write_janus_hf

        model = api.load_ar_model(write_janus_hf(root / "janus"), "cpu", "fp32")
        cond = Condition(prompts=["a red fox in the snow", "a blue car"])
    elif name == "emu3":
        from .chat_fixtures import write_emu3_hf

        model = api.load_ar_model(write_emu3_hf(root / "emu3"), "cpu", "fp32")
        model.image_size, model.downsample = 16, 4  # a 4x4 grid with the fixture's VQ
        cond = Condition(prompts=["a red fox", "a blue car"], negative_prompts=["", "blurry"])
    elif name == "lumina-mgpt":
        from .lumina_fixtures import write_lumina

        model = api.load_ar_model(write_lumina(root / "lumina")[0], "cpu", "fp32")
        model.image_size = 64  # a 4x4 grid
        cond = Condition(prompts=["a red fox", "a blue car"])
    else:
        raise ValueError(name)
    return model, cond, model.grid_for(cond)
