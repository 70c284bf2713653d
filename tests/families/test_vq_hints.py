"""A codebook mismatch names the VQ of the model's own family (not LlamaGen's for everyone)."""
from __future__ import annotations

import pytest

from helpers.four_families import FAMILIES
from zipar import api
from zipar.errors import ZipARError

OWN_VQ = {"llamagen": "vq_ds16_c2i.pt", "janus-pro": "Janus-Pro model folder itself", "emu3": "Emu3-VisionTokenizer",
          "lumina-mgpt": "Chameleon VQGAN: vqgan.ckpt"}


class OtherVQ:
    codebook_size, downsample = 3, 16


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mismatch_names_the_familys_own_vq(four_families, family):
    model = four_families[family][0]
    with pytest.raises(ZipARError, match="use the VQ released with the model: ") as err:
        api.check_pair(model, OtherVQ())
    assert OWN_VQ[family] in str(err.value)
    others = [text for name, text in OWN_VQ.items() if name != family]
    assert not any(text in str(err.value) for text in others)
