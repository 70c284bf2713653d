"""Meta's Chameleon VQGAN: the image tokenizer of Lumina-mGPT (8192 codes, 16x downsampling).

Lumina-mGPT samples a grid of Chameleon image codes; this module turns such a grid into
pixels (``decode_codes``) and images back into codes (``encode_images``). Users download
the tokenizer themselves from Meta's Chameleon release (access is granted by Meta, so
ZipAR cannot ship it) as two files in its ``tokenizer/`` folder:

* ``vqgan.ckpt``: a torch pickle ``{"state_dict": {...}, ...}`` of a taming-transformers
  ``VQModel``. Besides the encoder/decoder/codebook it may hold the training losses'
  weights (``loss.*``), which inference never uses and which are skipped here.
* ``vqgan.yaml``: the taming config (``model.params`` with ``embed_dim``, ``n_embed`` and a
  ``ddconfig``). The architecture is read from it, not guessed from tensor shapes, because
  where attention blocks sit depends on ``resolution`` and ``attn_resolutions`` only.

The network is the shared taming one (``zipar.vq.taming``) built from the yaml; the
checkpoint's taming names (``encoder.down.{i}.block.{j}.conv1``, ``decoder.up.{i}.upsample.conv``,
``quantize.embedding``...) map one to one onto its canonical names, and ``state_dict()``
speaks the published names. Every tensor is checked against the yaml before anything is
loaded, and a mismatch is a ZipARError naming the file's tensor, both shapes and the fix.
Details that differ from LlamaGen's VQ, all as in the reference code: attention placement
follows ``attn_resolutions``, the codebook is used as stored (no L2 normalisation), and
codes are matched in float32.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ZipARError
from ..io.block_counts import check_block_counts
from ..io.checkpoint import load_error_detail, refused_by_weights_only
from .base import VQFormat, key_sample
from .taming import TamingSpec, TamingVQ, downsample_of, rename_key

CKPT_NAME = "vqgan.ckpt"
YAML_NAME = "vqgan.yaml"
RELEASE_SUBFOLDER = "tokenizer"  # where Meta's release keeps the two files, next to text_tokenizer.json
TRAINING_PREFIXES = ("loss.",)  # discriminator / perceptual-loss weights saved by the training run
GROUPS = 32  # every GroupNorm of the taming VQGAN has 32 groups (eps 1e-6)
DISTANCE_CHUNK = 4096  # latent vectors per codebook-distance block when encoding (bounds memory)

RELEASE_HINT = (
    "The Chameleon VQGAN is not shipped with ZipAR: request access to Meta's Chameleon release "
    "(https://ai.meta.com/resources/models-and-libraries/chameleon-downloads/), download it, and use the "
    f"two files from its {RELEASE_SUBFOLDER}/ folder, {CKPT_NAME} and {YAML_NAME}, kept side by side in one folder")
SAME_DOWNLOAD_HINT = f"{CKPT_NAME} and {YAML_NAME} must come from the same Chameleon release download"
LUMINA_MODEL_TYPE = "chameleon"  # config.json of a Lumina-mGPT language-model folder, which holds no VQGAN
LUMINA_VQ_HINT = ("Lumina-mGPT decodes with Meta's Chameleon VQGAN, which its folder does not contain: download "
                  "vqgan.ckpt and vqgan.yaml from Meta's Chameleon release (tokenizer/ folder), put both into one "
                  "folder (e.g. ComfyUI/models/zipar/chameleon-vqgan/) and pick vqgan.ckpt (or that folder) as the VQ; "
                  "Lumina-mGPT 2.0 decodes with SBER-MoVQGAN-270M instead: pick movqgan_270M.ckpt from "
                  "ai-forever/MoVQGAN")
# A LlamaGen VQ file shares some top-level names with the VQGAN but has these instead of down/up.
LLAMAGEN_MARKERS = ("encoder.conv_blocks.", "decoder.conv_blocks.", "quantize.codebook_used")
OTHER_WRAPPERS = ("model", "module", "ema")
CORE_KEYS = ("encoder.conv_in.weight", "decoder.conv_in.weight", "quantize.embedding.weight")


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ChameleonVQConfig:
    """The architecture fields of ``vqgan.yaml`` (taming names); the release has
    n_embed 8192, embed_dim 256, ch 128, ch_mult (1, 1, 2, 2, 4), z_channels 256, resolution 512."""

    n_embed: int
    embed_dim: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    z_channels: int
    resolution: int
    in_channels: int = 3
    out_ch: int = 3
    resamp_with_conv: bool = True
    attn_type: str = "vanilla"  # "none": no attention blocks at all (nn.Identity in taming)
    tanh_out: bool = False

    @property
    def downsample(self) -> int:
        return downsample_of(self.ch_mult)

    def spec(self) -> TamingSpec:
        """The shared network as the reference builds it from this yaml: the codebook used as
        stored (no L2 normalisation), codes matched in float32 in row blocks."""
        levels = range(len(self.ch_mult))
        return TamingSpec(
            codebook_size=self.n_embed, embed_dim=self.embed_dim, ch=self.ch, ch_mult=self.ch_mult,
            num_res_blocks=self.num_res_blocks, z_channels=self.z_channels,
            encoder_attn=tuple(self.encoder_has_attn(i) for i in levels),
            decoder_attn=tuple(self.decoder_has_attn(i) for i in levels),
            middle_attn=self.attn_type == "vanilla", resample_with_conv=self.resamp_with_conv, tanh_out=self.tanh_out,
            float32_distances=True, distance_rows=DISTANCE_CHUNK, in_channels=self.in_channels,
            out_channels=self.out_ch)

    def encoder_has_attn(self, level: int) -> bool:
        """Taming halves its running resolution after every level but the last and puts an
        attention block after each res block of a level whose resolution is listed. The
        running resolution comes from the yaml, not from the image being encoded."""
        return self.attn_type == "vanilla" and self.resolution // 2 ** level in self.attn_resolutions

    def decoder_has_attn(self, level: int) -> bool:
        """The decoder starts from ``resolution // 2**(levels-1)`` and doubles it upwards,
        which differs from the encoder's value when ``resolution`` is not a multiple of the
        downsampling factor; reproduced as is."""
        deepest = len(self.ch_mult) - 1
        curr_res = (self.resolution // 2 ** deepest) * 2 ** (deepest - level)
        return self.attn_type == "vanilla" and curr_res in self.attn_resolutions

    def summary(self) -> str:
        return (f"ch {self.ch}, ch_mult {list(self.ch_mult)}, num_res_blocks {self.num_res_blocks}, "
                f"attn_resolutions {list(self.attn_resolutions)}, resolution {self.resolution}, "
                f"z_channels {self.z_channels}, embed_dim {self.embed_dim}, n_embed {self.n_embed}")


def _import_yaml():
    try:
        import yaml
    except ImportError as exc:
        raise ZipARError("reading vqgan.yaml (the Chameleon VQGAN config) needs PyYAML, which is not installed; "
                         "run `pip install pyyaml` in the Python environment that runs ZipAR.") from exc
    return yaml


def _find_params(data: Any, path: Path) -> dict[str, Any]:
    """``model.params`` of a taming config; a bare params dict (holding ``ddconfig``) is accepted too."""
    if isinstance(data, dict):
        model = data.get("model")
        if isinstance(model, dict) and isinstance(model.get("params"), dict):
            return model["params"]
        if isinstance(data.get("params"), dict) and "ddconfig" in data["params"]:
            return data["params"]
        if "ddconfig" in data:
            return data
    raise ZipARError(f"'{path}' is not a taming VQGAN config: expected model: params: with embed_dim, n_embed and "
                     f"a ddconfig section, as in the {YAML_NAME} of Meta's Chameleon release. {SAME_DOWNLOAD_HINT}.")


def _int_field(section: dict[str, Any], name: str, path: Path, default: int | None = None, minimum: int = 1) -> int:
    value = section.get(name, default)
    if value is None:
        raise ZipARError(f"'{path}' has no '{name}' field (needed to build the Chameleon VQGAN); "
                         f"re-download {YAML_NAME}: {SAME_DOWNLOAD_HINT}.")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ZipARError(f"'{name}' in '{path}' must be an integer >= {minimum}; got {value!r}. "
                         f"Re-download {YAML_NAME}: {SAME_DOWNLOAD_HINT}.")
    return value


def _bool_field(section: dict[str, Any], name: str, path: Path, default: bool) -> bool:
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ZipARError(f"'{name}' in '{path}' must be true or false; got {value!r}.")
    return value


def _int_list(section: dict[str, Any], name: str, path: Path, default: Any, allow_empty: bool) -> tuple[int, ...]:
    value = section.get(name, default)
    if value is None and allow_empty and name in section:
        value = []  # an explicit null: transformers' ChameleonVQVAEConfig spells "no attention" so
    if value is None:
        raise ZipARError(f"'{path}' has no '{name}' field (needed to build the Chameleon VQGAN); "
                         f"re-download {YAML_NAME}: {SAME_DOWNLOAD_HINT}.")
    ok = isinstance(value, (list, tuple)) and (allow_empty or value) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= (0 if allow_empty else 1) for v in value)
    if not ok:
        raise ZipARError(f"'{name}' in '{path}' must be a list of {'' if allow_empty else 'positive '}integers; "
                         f"got {value!r}. Re-download {YAML_NAME}: {SAME_DOWNLOAD_HINT}.")
    return tuple(value)


def parse_vqgan_config(data: Any, path: str | os.PathLike = YAML_NAME) -> ChameleonVQConfig:
    """The architecture described by a loaded ``vqgan.yaml`` (see ``read_vqgan_yaml``).

    Optional ddconfig fields take taming's defaults (ch_mult [1, 2, 4, 8], resamp_with_conv
    true, tanh_out false, attn_type vanilla), except ``double_z``: taming's encoder defaults it
    to true, but a VQModel with it cannot run (its quant_conv reads z_channels, not 2x), so an
    absent value means false here and an explicit true is refused.
    """
    path = Path(path)
    params = _find_params(data, path)
    dd = params.get("ddconfig")
    if not isinstance(dd, dict):
        raise ZipARError(f"'{path}' has no ddconfig section under model.params; re-download {YAML_NAME}: "
                         f"{SAME_DOWNLOAD_HINT}.")
    if params.get("remap") is not None:
        raise ZipARError(f"'{path}' uses a codebook remap file (remap: {params['remap']!r}), which the Chameleon "
                         "VQGAN does not; this config is for a different VQGAN.")
    if _bool_field(dd, "double_z", path, False):
        raise ZipARError(f"'{path}' sets double_z: true, which is a KL-autoencoder setting; the Chameleon VQGAN has "
                         f"double_z: false. {SAME_DOWNLOAD_HINT}.")
    if _bool_field(dd, "give_pre_end", path, False):
        raise ZipARError(f"'{path}' sets give_pre_end: true (the decoder would return features, not pixels); "
                         "set it to false or use the unmodified vqgan.yaml from Meta's Chameleon release.")
    if _bool_field(dd, "use_linear_attn", path, False):
        raise ZipARError(f"'{path}' sets use_linear_attn: true, which the taming VQGAN code itself does not build; "
                         "use the unmodified vqgan.yaml from Meta's Chameleon release.")
    attn_type = dd.get("attn_type", "vanilla")
    if attn_type not in ("vanilla", "none"):
        raise ZipARError(f"attn_type {attn_type!r} in '{path}' is not supported (only 'vanilla' and 'none' exist in "
                         "the taming VQGAN); use the unmodified vqgan.yaml from Meta's Chameleon release.")
    config = ChameleonVQConfig(
        n_embed=_int_field(params, "n_embed", path),
        embed_dim=_int_field(params, "embed_dim", path),
        ch=_int_field(dd, "ch", path),
        ch_mult=_int_list(dd, "ch_mult", path, [1, 2, 4, 8], allow_empty=False),
        num_res_blocks=_int_field(dd, "num_res_blocks", path),
        attn_resolutions=_int_list(dd, "attn_resolutions", path, None, allow_empty=True),
        z_channels=_int_field(dd, "z_channels", path),
        resolution=_int_field(dd, "resolution", path),
        in_channels=_int_field(dd, "in_channels", path),
        out_ch=_int_field(dd, "out_ch", path),
        resamp_with_conv=_bool_field(dd, "resamp_with_conv", path, True),
        attn_type=attn_type,
        tanh_out=_bool_field(dd, "tanh_out", path, False),
    )
    if config.in_channels != 3 or config.out_ch != 3:
        raise ZipARError(f"'{path}' describes a VQGAN for {config.in_channels}-channel input and {config.out_ch}-channel "
                         "output; ZipAR decodes RGB images (3 and 3), as the Chameleon VQGAN does.")
    widths = [config.ch * m for m in config.ch_mult]
    if any(w % GROUPS for w in [config.ch, *widths]):
        raise ZipARError(f"ch {config.ch} with ch_mult {list(config.ch_mult)} in '{path}' gives widths {widths}, not "
                         f"all multiples of {GROUPS} (the GroupNorm group count); the file is not a taming VQGAN config.")
    return config


def read_vqgan_yaml(path: str | os.PathLike) -> ChameleonVQConfig:
    """Parse ``vqgan.yaml`` with PyYAML's safe loader (plain data only, no tags executed)."""
    yaml = _import_yaml()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZipARError(f"cannot read '{path}' ({exc}); re-download {YAML_NAME} from Meta's Chameleon release.") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZipARError(f"'{path}' is not valid YAML ({first}); re-download {YAML_NAME} from Meta's Chameleon "
                         "release.") from exc
    return parse_vqgan_config(data, path)


# ----------------------------------------------------------------------------- files
def _pair_in_folder(folder: Path) -> tuple[Path, Path] | None:
    for candidate in (folder, folder / RELEASE_SUBFOLDER):
        ckpt, cfg = candidate / CKPT_NAME, candidate / YAML_NAME
        if ckpt.is_file() and cfg.is_file():
            return ckpt, cfg
    return None


def _partner(path: Path, suffix: str, fixed_name: str) -> Path | None:
    """Same stem with the other suffix first, then the release's fixed name, in the same folder."""
    for candidate in (path.with_suffix(suffix), path.parent / fixed_name):
        if candidate.is_file():
            return candidate
    return None


def is_chameleon_vq_source(path: str | os.PathLike) -> bool:
    """Cheap check for loaders that dispatch on a path: a ``.ckpt`` with its yaml beside it
    (same stem or ``vqgan.yaml``), or a folder holding ``vqgan.ckpt`` + ``vqgan.yaml``
    (itself or in its ``tokenizer/`` subfolder, as in Meta's release). Reads no file."""
    try:
        path = Path(path).expanduser()
        if path.is_dir():
            return _pair_in_folder(path) is not None
        if path.is_file() and path.suffix.lower() == ".ckpt":
            return _partner(path, ".yaml", YAML_NAME) is not None
    except (OSError, ValueError):
        pass
    return False


def find_chameleon_vq_files(source: str | os.PathLike) -> tuple[Path, Path]:
    """(vqgan.ckpt, vqgan.yaml) for a ckpt file, its yaml, or a folder holding both."""
    path = Path(source).expanduser()
    if path.is_dir():
        pair = _pair_in_folder(path)
        if pair:
            return pair
        have = [n for n in (CKPT_NAME, YAML_NAME) if (path / n).is_file() or (path / RELEASE_SUBFOLDER / n).is_file()]
        found = f" (found only {have[0]})" if have else ""
        raise ZipARError(f"no {CKPT_NAME} + {YAML_NAME} pair in folder '{path}' or its {RELEASE_SUBFOLDER}/ "
                         f"subfolder{found}. {RELEASE_HINT}.")
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            ckpt = _partner(path, ".ckpt", CKPT_NAME)
            if ckpt is None:
                raise ZipARError(f"no checkpoint next to '{path}' (looked for {path.with_suffix('.ckpt').name} and "
                                 f"{CKPT_NAME} in {path.parent}). {RELEASE_HINT}.")
            return ckpt, path
        cfg = _partner(path, ".yaml", YAML_NAME)
        if cfg is None:
            raise ZipARError(f"no config next to '{path}' (looked for {path.with_suffix('.yaml').name} and {YAML_NAME} "
                             f"in {path.parent}); the Chameleon VQGAN needs both files. {RELEASE_HINT}.")
        return path, cfg
    raise ZipARError(f"Chameleon VQGAN not found: '{path}' does not exist. Point to {CKPT_NAME} or to the folder "
                     f"holding it. {RELEASE_HINT}.")


def read_vqgan_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of ``vqgan.ckpt``, from ``{"state_dict": ...}`` or a bare state dict.

    Loaded with ``weights_only=True`` so the pickle cannot run code (the published file
    holds only tensors and plain values), memory-mapped when the file is in torch's zip
    format so the weights are paged in from disk instead of first copied into RAM;
    legacy-format files cannot be mapped and are read normally.
    """
    path = Path(path)

    def load(mmap: bool) -> Any:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(True)
        except pickle.UnpicklingError:
            raise
        except Exception:  # legacy (non-zip) torch.save files cannot be memory-mapped
            obj = load(False)
    except pickle.UnpicklingError as exc:
        # an unknown opcode means the bytes are not a pickle at all (an HTML error page, a
        # truncated download); anything else refused by weights_only is a foreign object
        if refused_by_weights_only(exc):
            raise ZipARError(
                f"refusing to load '{path}': it pickles Python objects other than tensors and plain values "
                f"({load_error_detail(exc)}), and ZipAR never unpickles code from a checkpoint. The published "
                f"{CKPT_NAME} holds only weights: re-download it from Meta's Chameleon release, or re-save just the "
                "weights with torch.save({'state_dict': state_dict}, path).") from exc
        raise ZipARError(f"cannot read '{path}' as a torch checkpoint ({load_error_detail(exc)}); the download may "
                         f"be incomplete. {RELEASE_HINT}.") from exc
    except Exception as exc:
        raise ZipARError(f"cannot read '{path}' as a torch checkpoint ({load_error_detail(exc)}); the download may "
                         f"be incomplete. {RELEASE_HINT}.") from exc
    # "state_dict" is the release's wrapper; the others are how other models' files (e.g. a
    # LlamaGen VQ under "model") wrap theirs, read so that the caller can name what they are.
    candidates = [obj.get(k) for k in ("state_dict", *OTHER_WRAPPERS)] + [obj] if isinstance(obj, dict) else []
    for candidate in candidates:
        if isinstance(candidate, dict):
            tensors = {k: v for k, v in candidate.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
    raise ZipARError(f"'{path}' holds no state dict (expected {{'state_dict': {{name: tensor}}}} or a bare dict of "
                     f"tensors); it is not the Chameleon VQGAN {CKPT_NAME}. {RELEASE_HINT}.")


# ----------------------------------------------------------------------------- the tokenizer
def _published_names(module: "ChameleonVQ", state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """``state_dict()`` under the file's names; this module's entries are the last ones added,
    so popping and re-adding them in order keeps the order."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + module.file_names[key[len(prefix):]]] = state_dict.pop(key)


def _canonical_names(module: "ChameleonVQ", state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                     missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """``load_state_dict`` takes the file's names: each published name goes to its one place;
    any other name is unexpected, even one that happens to be a canonical name."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        value = state_dict.pop(key)
        canonical = module.canonical_names.get(key[len(prefix):])
        if canonical is None:
            unexpected_keys.append(key)
        else:
            state_dict[prefix + canonical] = value


class ChameleonVQ(TamingVQ):
    """Codes <-> images with the Chameleon VQGAN (frozen, eval mode).

    The network runs under the shared canonical names; ``state_dict()`` and
    ``load_state_dict()`` speak the published taming names (the checkpoint's keys minus its
    training-only ``loss.*`` entries) through ``file_names`` / ``canonical_names``, a strict
    one-to-one map built from the network itself.
    """

    vq_name = "Chameleon"
    truncates_to_uint8 = True  # Lumina-mGPT floors pixel*255 when it writes 8-bit images (api.save_images)

    def __init__(self, config: ChameleonVQConfig, source_path: str | None = None):
        super().__init__(config.spec(), source_path)  # source_path: the vqgan.ckpt, for messages and UIs
        self.config = config
        levels = len(config.ch_mult)
        canonical = list(self.state_dict(keep_vars=True))  # before the hooks: canonical names
        self.file_names = {k: rename_key(k, to_taming=True, reversed_levels=levels) for k in canonical}
        self.canonical_names = {published: k for k, published in self.file_names.items()}
        if len(self.canonical_names) != len(canonical):
            raise RuntimeError("two canonical Chameleon VQGAN tensors map to one published name")
        self.register_state_dict_post_hook(_published_names)
        self.register_load_state_dict_pre_hook(_canonical_names)


# ----------------------------------------------------------------------------- loading
def _reject_foreign(sd: dict[str, torch.Tensor], ckpt: Path) -> None:
    """Clear words for a file that is some other model, before listing hundreds of keys."""
    if any(k.startswith(LLAMAGEN_MARKERS[:2]) or k == LLAMAGEN_MARKERS[2] for k in sd):
        raise ZipARError(f"'{ckpt}' is a LlamaGen VQ tokenizer (it has encoder.conv_blocks.* keys), not the Chameleon "
                         "VQGAN; load it as the VQ of a LlamaGen model. Lumina-mGPT needs vqgan.ckpt + vqgan.yaml. "
                         f"{RELEASE_HINT}.")
    if not any(k in sd for k in CORE_KEYS):
        example = next(iter(sorted(sd)), "")
        raise ZipARError(f"'{ckpt}' is not the Chameleon VQGAN: it has none of {', '.join(CORE_KEYS)} "
                         f"(its first tensor is '{example}'). {RELEASE_HINT}.")


def check_vqgan_state_dict(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], config: ChameleonVQConfig,
                           ckpt: Path, yaml_path: Path) -> dict[str, torch.Tensor]:
    """The inference tensors of ``sd`` (training-only ``loss.*`` dropped), or a one-line
    ZipARError naming the first missing / unexpected / wrong-shaped tensor and the fix."""
    _reject_foreign(sd, ckpt)
    weights = {k: v for k, v in sd.items() if not k.startswith(TRAINING_PREFIXES)}
    # module order (encoder.conv_in first, quantize after the decoder), so the first offender
    # named is the one closest to the yaml field that differs
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"tensor '{k}' is {list(weights[k].shape)} in {ckpt.name} but {yaml_path.name} implies "
             f"{list(expected[k].shape)}" for k in expected
             if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    problems = []
    if wrong:
        more = f" (and {len(wrong) - 1} more shape mismatches)" if len(wrong) > 1 else ""
        problems.append(wrong[0] + more)
    if missing:
        problems.append(f"{len(missing)} tensors missing from {ckpt.name}, e.g. {key_sample(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors in {ckpt.name} that {yaml_path.name} has no place for, "
                        f"e.g. {key_sample(unexpected)}")
    if problems:
        raise ZipARError(f"Chameleon VQGAN weights '{ckpt}' do not match its config '{yaml_path}' "
                         f"({config.summary()}): {'; '.join(problems)}. Fix: {SAME_DOWNLOAD_HINT}.")
    return weights


def chameleon_vq_from_state_dict(sd: dict[str, torch.Tensor], config: ChameleonVQConfig,
                                 ckpt: str | os.PathLike = CKPT_NAME, yaml_path: str | os.PathLike = YAML_NAME,
                                 device: str | torch.device = "cpu",
                                 dtype: torch.dtype = torch.float32) -> ChameleonVQ:
    """A ``ChameleonVQ`` holding exactly the tensors of ``sd`` (checked against ``config``).

    Built on the meta device (the release has ~70M parameters; a random init would be
    thrown away) and filled by ``load_state_dict(assign=True)``, then moved and cast.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ZipARError(f"the Chameleon VQ needs a floating-point dtype (float32, bfloat16, float16); got {dtype!r}.")
    ckpt, yaml_path = Path(ckpt), Path(yaml_path)
    _reject_foreign(sd, ckpt)  # another model's file is named as such before its blocks are counted
    levels, blocks = len(config.ch_mult), config.num_res_blocks
    check_block_counts(sd, {"encoder.down.": levels, "encoder.down.0.block.": blocks, "decoder.up.": levels,
                            "decoder.up.0.block.": blocks + 1},
                       f"Chameleon VQGAN weights '{ckpt}' with config '{yaml_path}'", f"Fix: {SAME_DOWNLOAD_HINT}")
    with torch.device("meta"):
        model = ChameleonVQ(config, source_path=str(ckpt))
    weights = check_vqgan_state_dict(sd, model.state_dict(), config, ckpt, yaml_path)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:  # the check above should make this unreachable
        first = str(exc).strip().splitlines()[0]
        raise ZipARError(f"Chameleon VQGAN weights '{ckpt}' do not load ({first}). Fix: {SAME_DOWNLOAD_HINT}.") from exc
    model = model.to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


def load_chameleon_vq(source: str | os.PathLike, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> ChameleonVQ:
    """Load the Chameleon VQGAN (Lumina-mGPT's image tokenizer) from Meta's release files.

    ``source`` is ``vqgan.ckpt`` (its yaml is the same stem + ``.yaml`` or ``vqgan.yaml``
    beside it), ``vqgan.yaml``, or a folder holding both (itself or its ``tokenizer/``
    subfolder). Any disagreement between the two files is a ZipARError, never a
    half-loaded model.
    """
    ckpt, yaml_path = find_chameleon_vq_files(source)
    config = read_vqgan_yaml(yaml_path)
    sd = read_vqgan_checkpoint(ckpt)
    return chameleon_vq_from_state_dict(sd, config, ckpt, yaml_path, device=device, dtype=dtype)


FORMAT = VQFormat(
    name="Meta's Chameleon VQGAN, the image decoder of Lumina-mGPT",
    files=f"Meta's Chameleon VQGAN for Lumina-mGPT ({CKPT_NAME} with {YAML_NAME} beside it, or their folder)",
    detect=is_chameleon_vq_source, load=load_chameleon_vq,
    no_vq_folders={LUMINA_MODEL_TYPE: f"is a Lumina-mGPT language model. {LUMINA_VQ_HINT}."})
