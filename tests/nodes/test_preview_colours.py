"""Preview colours fitted from the VQ: codes that decode to known colours are previewed in them."""
from __future__ import annotations

import numpy as np
import torch

from nodes import preview
from zipar.core.loop import Progress


class ColourVQ:
    """A VQ whose code k decodes to a flat patch of colour ``vectors[k] @ A + b`` (known per code)."""

    codebook_size, downsample = 40, 4

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.vectors = torch.rand(self.codebook_size, 5, generator=g)
        self.A = torch.rand(5, 3, generator=g) * 0.15
        self.b = torch.tensor([0.1, 0.2, 0.15])
        self.decodes = 0

    def colours(self) -> torch.Tensor:
        return self.vectors @ self.A + self.b  # in [0.1, 0.95]

    def code_vectors(self) -> torch.Tensor:
        return self.vectors

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        self.decodes += 1
        rgb = self.colours()[codes]  # [B, h, w, 3]
        return rgb.permute(0, 3, 1, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)


class Model:
    """Stands in for a family: the two members of the contract the preview reads."""

    vocab_size = 40

    def code_embeddings(self) -> None:  # no code vectors: hashed colours unless a VQ gives them
        return None


def test_codes_are_previewed_in_the_colours_they_decode_to():
    vq = ColourVQ()
    expected = (vq.colours() * 255).round().numpy()
    palette = preview.palette_for(Model(), vq)
    assert palette.shape == (40, 3) and np.abs(palette.astype(int) - expected).max() <= 1
    assert preview.palette_for(Model(), vq) is palette and vq.decodes == 1  # fitted once per VQ
    # a frame shows them: every filled cell in its code's colour, the rest grey
    tokens = torch.arange(16).reshape(4, 4)
    filled = torch.zeros(4, 4, dtype=torch.bool)
    filled[:2] = True
    frames = preview.TokenPreview(Model(), min_interval=0, pixels=4, vq=vq)
    kind, image, _ = frames(Progress(step=1, total=1, tokens=tokens[None], filled=filled))
    pixels = np.asarray(image)
    assert kind == "JPEG" and pixels.shape == (4, 4, 3)
    assert np.abs(pixels[:2].reshape(-1, 3).astype(int) - expected[:8]).max() <= 1
    assert (pixels[2:] == preview.UNFILLED).all()


def test_without_a_matching_vq_the_models_own_palette_is_used():
    class Other(ColourVQ):
        codebook_size = 41

    model = Model()
    assert preview.palette_for(model, Other()) is preview.palette_for(model)  # another codebook: not its colours

    class NoVectors:
        codebook_size = 40

        def decode_codes(self, codes):
            raise AssertionError("not decoded without code vectors")

    assert preview.palette_for(model, NoVectors()) is preview.palette_for(model)
