"""The SAM side of SAGE training (docs/training.md): checkpoint loading with every key checked (ViT-B/L/H read
off the tensor shapes, never downloaded), the truncated frozen encoder Phi of L_cs, the resumable top-K mask
cache, and a tiny random SAM for tests and smoke runs.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sage_ros.training.datasets import PairRecord
from sage_ros.training.mask_cache import mask_path, save_masks, top_k_by_area

log = logging.getLogger(__name__)

ENCODER_PREFIX = "image_encoder."
#: Official SAM checkpoints (Kirillov et al. 2023, Apache-2.0), as published by Meta.
SAM_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}
#: (embed_dim, depth) of the official encoders, to name what a checkpoint holds.
SAM_VARIANTS = {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}
# SAM normalises 0-255 RGB with these ImageNet statistics.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
PHI_BLOCKS = 2


class SamCheckpointError(RuntimeError):
    """A SAM checkpoint that is missing, unreadable or not a SAM image encoder."""


def missing_checkpoint_message(path: Path) -> str:
    urls = "\n".join(f"  {name}: {url}" for name, url in SAM_URLS.items())
    return (
        f"SAM checkpoint {path} not found. Training never downloads weights: fetch one of the official "
        "checkpoints yourself (ViT-B is the default) and set its path as sam.checkpoint in the config "
        f"(or --set sam.checkpoint=PATH):\n{urls}"
    )


def load_sam_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a SAM checkpoint (full model or bare encoder) on the CPU with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise SamCheckpointError(missing_checkpoint_message(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, or foreign pickled objects that weights_only refuses
        raise SamCheckpointError(f"SAM checkpoint {path} could not be read as a state dict: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise SamCheckpointError(f"SAM checkpoint {path} holds no state dict")
    return state


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image-encoder tensors with the `image_encoder.` prefix stripped (bare encoders pass as is)."""
    stripped = {k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if stripped:
        return stripped
    if "patch_embed.proj.weight" in state:
        return dict(state)
    raise SamCheckpointError(
        f"no SAM image-encoder keys found (expected names like '{ENCODER_PREFIX}patch_embed.proj.weight'; "
        f"found e.g. {sorted(state)[:3]})"
    )


@dataclass(frozen=True)
class EncoderConfig:
    """ImageEncoderViT hyper-parameters, read from tensor shapes."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    out_chans: int
    window_size: int
    global_attn_indexes: tuple[int, ...]

    @property
    def variant(self) -> str:
        for name, dims in SAM_VARIANTS.items():
            if dims == (self.embed_dim, self.depth):
                return name
        return f"custom(embed={self.embed_dim}, depth={self.depth})"


def encoder_config(enc: dict[str, torch.Tensor]) -> EncoderConfig:
    """Infer the encoder architecture from its state dict (official and tiny checkpoints alike)."""
    try:
        embed_dim, _, patch, _ = enc["patch_embed.proj.weight"].shape
        grid = enc["pos_embed"].shape[1]
        depth = 1 + max(int(m.group(1)) for k in enc if (m := re.match(r"blocks\.(\d+)\.", k)))
        rel = [enc[f"blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
        hidden = enc["blocks.0.mlp.lin1.weight"].shape[0]
        out_chans = enc["neck.0.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise SamCheckpointError(
            f"not a SAM ViT image encoder with relative positions (missing or odd tensor: {exc})"
        ) from exc
    global_idx = tuple(i for i, shape in enumerate(rel) if shape[0] == 2 * grid - 1)
    windowed = [shape for i, shape in enumerate(rel) if i not in global_idx] or rel
    return EncoderConfig(
        img_size=int(grid * patch),
        patch_size=int(patch),
        embed_dim=int(embed_dim),
        depth=int(depth),
        num_heads=int(embed_dim // rel[0][1]),
        mlp_ratio=float(hidden) / float(embed_dim),
        out_chans=int(out_chans),
        window_size=int((windowed[0][0] + 1) // 2),
        global_attn_indexes=global_idx,
    )


def build_image_encoder(cfg: EncoderConfig) -> nn.Module:
    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        out_chans=cfg.out_chans,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=cfg.window_size,
        global_attn_indexes=cfg.global_attn_indexes,
    )


def load_image_encoder(path: str | Path) -> tuple[nn.Module, EncoderConfig]:
    """The SAM image encoder of checkpoint `path` (its size read off the tensor shapes), all keys loaded
    (checked), in eval mode."""
    enc = encoder_state(load_sam_state(path))
    cfg = encoder_config(enc)
    model = build_image_encoder(cfg)
    expected = model.state_dict()
    result = model.load_state_dict(enc, strict=False)
    loaded = len(expected) - len(result.missing_keys)
    # The upstream defect loaded 0 keys without a word; here anything short of all of them stops.
    if result.missing_keys or result.unexpected_keys or loaded != len(expected):
        raise SamCheckpointError(
            f"{path}: loaded {loaded} of {len(expected)} encoder tensors "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    log.info("SAM %s image encoder: %d tensors loaded from %s", cfg.variant, loaded, path)
    return model.eval(), cfg


class TruncatedSamEncoder(nn.Module):
    """Phi for L_cs: grey (N, 1, H, W) in [0, 1] -> InstanceNorm'd outputs of the first two blocks.

    Patch embedding, absolute positions resized to the input's patch grid (SAM's are for 1024x1024
    and training crops are smaller), then the first two (windowed, relative-position) blocks; the
    neck is dropped. All weights frozen; gradients still flow to the input.
    """

    def __init__(self, encoder: nn.Module, num_blocks: int = PHI_BLOCKS) -> None:
        super().__init__()
        self.patch_embed = encoder.patch_embed
        self.pos_embed = encoder.pos_embed
        self.blocks = nn.ModuleList(list(encoder.blocks)[:num_blocks])
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1) / 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1) / 255.0, persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TruncatedSamEncoder:
        return super().train(False)  # frozen: stays in eval mode whatever the trainer does

    def forward(self, grey: torch.Tensor) -> list[torch.Tensor]:
        x = (grey.expand(-1, 3, -1, -1) - self.mean) / self.std
        x = self.patch_embed(x)  # (N, h, w, C)
        if self.pos_embed is not None:
            pos = self.pos_embed
            if pos.shape[1:3] != x.shape[1:3]:
                pos = F.interpolate(
                    pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bilinear", align_corners=False
                ).permute(0, 2, 3, 1)
            x = x + pos
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(F.instance_norm(x.permute(0, 3, 1, 2)))
        return outs


def load_phi(path: str | Path) -> TruncatedSamEncoder:
    """Phi from a SAM checkpoint (see load_image_encoder)."""
    return TruncatedSamEncoder(load_image_encoder(path)[0])


def _sam(enc: EncoderConfig, prompt_dim: int, mask_in: int, depth: int, mlp_dim: int, num_masks: int,
         iou_depth: int, iou_hidden: int, num_heads: int = 8) -> nn.Module:
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = enc.img_size // enc.patch_size
    return Sam(
        image_encoder=build_image_encoder(enc),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(enc.img_size, enc.img_size), mask_in_chans=mask_in),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=num_masks,
            transformer=TwoWayTransformer(depth=depth, embedding_dim=prompt_dim, mlp_dim=mlp_dim, num_heads=num_heads),
            transformer_dim=prompt_dim,
            iou_head_depth=iou_depth,
            iou_head_hidden_dim=iou_hidden,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


def build_sam(path: str | Path) -> nn.Module:
    """The whole SAM model of a full checkpoint (for the automatic mask generator), keys checked.

    The decoder's sizes are read off the tensors; its head count cannot be, and is 8 in every
    official checkpoint and in `save_tiny_sam`'s.
    """
    state = load_sam_state(path)

    def count(pattern: str) -> int:
        return 1 + max(int(m.group(1)) for k in state if (m := re.match(pattern, k)))

    try:
        sam = _sam(
            encoder_config(encoder_state(state)),
            prompt_dim=state["prompt_encoder.no_mask_embed.weight"].shape[1],
            mask_in=state["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            depth=count(r"mask_decoder\.transformer\.layers\.(\d+)\."),
            mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            num_masks=state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            iou_depth=count(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
            iou_hidden=state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        )
    except (KeyError, ValueError) as exc:
        raise SamCheckpointError(
            f"{path} is not a full SAM checkpoint (prompt encoder / mask decoder missing: {exc}); "
            "the mask cache needs the whole model"
        ) from exc
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SamCheckpointError(f"{path}: SAM weights do not fit the inferred architecture: {exc}") from exc
    return sam.eval()


def save_tiny_sam(path: str | Path, img_size: int = 64, seed: int = 0) -> Path:
    """Write a randomly initialised, tiny SAM (all three parts) in the official key layout.

    For tests and smoke runs only: its masks and features carry no semantics. Encoder: patch 8,
    width 32, 2 windowed blocks (window 4) + 1 global block; prompt/decoder width 16.
    """
    torch.manual_seed(seed)
    enc = EncoderConfig(img_size, patch_size=8, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0, out_chans=16,
                        window_size=4, global_attn_indexes=(2,))
    sam = _sam(enc, prompt_dim=16, mask_in=8, depth=1, mlp_dim=32, num_masks=3, iou_depth=2, iou_hidden=16)
    # SAM zero-initialises absolute positions; give them values so the resize in Phi is exercised.
    nn.init.normal_(sam.image_encoder.pos_embed, std=0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return path


def _as_rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image


@dataclass
class MaskCacheReport:
    written: int = 0
    skipped: int = 0
    empty: int = 0  # images where SAM kept no mask (the loader fills with whole-image masks)


def build_mask_cache(
    records: Iterable[PairRecord],
    sam_checkpoint: str | Path,
    out_root: str | Path,
    top_k: int = 4,
    device: str = "cpu",
    generator_kwargs: dict | None = None,
    progress: bool = True,
) -> MaskCacheReport:
    """Run SAM's automatic mask generator on every IR and visible image; keep the top-K by area.

    Files already present are skipped, so an interrupted run resumes where it stopped.
    """
    from segment_anything import SamAutomaticMaskGenerator
    from tqdm import tqdm

    records = list(records)
    todo = [(r, m) for r in records for m in ("ir", "vis") if not mask_path(out_root, m, r.name).is_file()]
    report = MaskCacheReport(skipped=2 * len(records) - len(todo))
    if not todo:
        return report
    sam = build_sam(sam_checkpoint).to(device)
    generator = SamAutomaticMaskGenerator(sam, **(generator_kwargs or {}))
    with torch.inference_mode():
        for record, modality in tqdm(todo, desc="SAM masks", unit="img", disable=not progress):
            src = record.ir_path if modality == "ir" else record.vis_path
            image = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE if modality == "ir" else cv2.IMREAD_COLOR)
            if image is None:
                raise SamCheckpointError(f"could not read image {src}")
            found = generator.generate(_as_rgb(image, bgr=modality == "vis"))
            masks = top_k_by_area([m["segmentation"] for m in found], top_k) if found else None
            if masks is None or not len(masks):
                masks = np.zeros((0, *image.shape[:2]), dtype=bool)
                report.empty += 1
            save_masks(mask_path(out_root, modality, record.name), masks)
            report.written += 1
    return report


def build_cache_for_config(cfg: object, records: list[PairRecord], device: str = "cpu",
                           progress: bool = True) -> MaskCacheReport:
    """`train student masks` for a TrainConfig: the top-K masks of `records` into cfg.data.mask_cache.

    The checkpoint must be a full SAM (encoder, prompt encoder, mask decoder); its size (ViT-B/L/H)
    is read off the tensors. Resumable: finished images are skipped.
    """
    data, sam_cfg = cfg.data, cfg.sam
    if not data.mask_cache:
        raise ValueError("data.mask_cache is not set: say where the masks go (e.g. --set data.mask_cache=cache/)")
    if not sam_cfg.checkpoint or not Path(sam_cfg.checkpoint).is_file():
        raise SamCheckpointError(missing_checkpoint_message(Path(sam_cfg.checkpoint or "(sam.checkpoint: null)")))
    # Every other field of the `sam` section is a SamAutomaticMaskGenerator argument.
    kwargs = {k: v for k, v in dataclasses.asdict(sam_cfg).items() if k != "checkpoint"}
    return build_mask_cache(records, sam_cfg.checkpoint, data.mask_cache, data.top_k, device, kwargs, progress)


def missing_mask_files(records: list[PairRecord], mask_root: str | Path) -> int:
    """How many of the 2 x len(records) cache files (IR and visible) are not there yet."""
    return sum(not mask_path(mask_root, m, r.name).is_file() for r in records for m in ("ir", "vis"))
