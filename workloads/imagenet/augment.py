"""imagenet_vit's train augmentation on top of the shared crop and flip (docs/workloads.md):
RandAugment (2 ops, magnitude 10) on each PIL image, then mixup (alpha 0.2) on each batch.

RandAugment draws `num_ops` of the 16 ops below uniformly (with replacement) and applies each one.
At magnitude 10 (of 10): Rotate 30 degrees, Posterize 4 bits, Solarize threshold 256, Color /
Contrast / Brightness / Sharpness factor 1.9, Shear 0.3, Translate 100 px, Cutout a gray box of
side 80, SolarizeAdd +110 (pixels below 128). Rotate, Shear and Translate are negated with
probability 1/2. Geometric ops resample with NEAREST and fill with gray (128, 128, 128).

Mixup mixes every batch with itself rolled by one row, with one lambda ~ Beta(alpha, alpha) per
step; the targets become soft rows over the 1,000 classes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

NUM_CLASSES = 1000
NUM_OPS = 2
MAGNITUDE = 10
MAX_MAGNITUDE = 10.0
MIXUP_ALPHA = 0.2
FILL = (128, 128, 128)
NEAREST = Image.Resampling.NEAREST
# Magnitudes at MAX_MAGNITUDE; an op's value is this times magnitude / MAX_MAGNITUDE.
MAX_ROTATE_DEGREES = 30.0
MAX_POSTERIZE_BITS = 4
MAX_SOLARIZE_THRESHOLD = 256
MAX_ENHANCE_DELTA = 1.8  # factor = 0.1 + delta: 1.9 at magnitude 10
MAX_SHEAR = 0.3
MAX_TRANSLATE_PX = 100.0
MAX_CUTOUT_HALF_SIDE = 40  # the box spans this much on each side of its centre
MAX_SOLARIZE_ADD = 110
SOLARIZE_ADD_THRESHOLD = 128
# Third word of the mixup lambda's seed: the per-image rngs are seeded (seed, step, row) with
# row < the global batch size, so this stream cannot collide with theirs.
MIXUP_STREAM = 0x6D697875


# --- the 16 ops: (image, value, rng) -> image ------------------------------------------------
def _affine(image: Image.Image, coefficients) -> Image.Image:
    """PIL's affine map: output pixel (x, y) reads input (a x + b y + c, d x + e y + f)."""
    return image.transform(
        image.size, Image.Transform.AFFINE, coefficients, resample=NEAREST, fillcolor=FILL
    )


def _cutout(image: Image.Image, half_side: float, rng: np.random.Generator) -> Image.Image:
    """A gray square of side 2 * half_side centred on a uniform pixel, clipped at the edges."""
    width, height = image.size
    centre_x, centre_y = int(rng.integers(0, width)), int(rng.integers(0, height))
    half = int(half_side)
    box = (
        max(0, centre_x - half), max(0, centre_y - half),
        min(width, centre_x + half), min(height, centre_y + half),
    )  # fmt: skip
    image = image.copy()
    image.paste(FILL, box)
    return image


def _solarize_add(image: Image.Image, addition: float) -> Image.Image:
    """Pixels below SOLARIZE_ADD_THRESHOLD get `addition`, clipped to 255."""
    add = int(addition)
    table = [min(255, v + add) if v < SOLARIZE_ADD_THRESHOLD else v for v in range(256)]
    return image.point(table * len(image.getbands()))


def _enhance(kind):
    return lambda image, factor, rng: kind(image).enhance(factor)


# name -> (op, value at magnitude 10 as a function of m = magnitude / MAX_MAGNITUDE, signed)
OPS = {
    "AutoContrast": (lambda image, v, rng: ImageOps.autocontrast(image), lambda m: 0.0, False),
    "Equalize": (lambda image, v, rng: ImageOps.equalize(image), lambda m: 0.0, False),
    "Invert": (lambda image, v, rng: ImageOps.invert(image), lambda m: 0.0, False),
    "Rotate": (
        lambda image, v, rng: image.rotate(v, resample=NEAREST, fillcolor=FILL),
        lambda m: m * MAX_ROTATE_DEGREES,
        True,
    ),
    "Posterize": (
        lambda image, v, rng: ImageOps.posterize(image, int(v)),
        lambda m: int(m * MAX_POSTERIZE_BITS),
        False,
    ),
    "Solarize": (
        lambda image, v, rng: ImageOps.solarize(image, int(v)),
        lambda m: int(m * MAX_SOLARIZE_THRESHOLD),
        False,
    ),
    "Color": (_enhance(ImageEnhance.Color), lambda m: 0.1 + m * MAX_ENHANCE_DELTA, False),
    "Contrast": (_enhance(ImageEnhance.Contrast), lambda m: 0.1 + m * MAX_ENHANCE_DELTA, False),
    "Brightness": (_enhance(ImageEnhance.Brightness), lambda m: 0.1 + m * MAX_ENHANCE_DELTA, False),
    "Sharpness": (_enhance(ImageEnhance.Sharpness), lambda m: 0.1 + m * MAX_ENHANCE_DELTA, False),
    "ShearX": (
        lambda image, v, rng: _affine(image, (1, v, 0, 0, 1, 0)),
        lambda m: m * MAX_SHEAR,
        True,
    ),
    "ShearY": (
        lambda image, v, rng: _affine(image, (1, 0, 0, v, 1, 0)),
        lambda m: m * MAX_SHEAR,
        True,
    ),
    "TranslateX": (
        lambda image, v, rng: _affine(image, (1, 0, v, 0, 1, 0)),
        lambda m: m * MAX_TRANSLATE_PX,
        True,
    ),
    "TranslateY": (
        lambda image, v, rng: _affine(image, (1, 0, 0, 0, 1, v)),
        lambda m: m * MAX_TRANSLATE_PX,
        True,
    ),
    "Cutout": (_cutout, lambda m: int(m * MAX_CUTOUT_HALF_SIDE), False),
    "SolarizeAdd": (
        lambda image, v, rng: _solarize_add(image, v),
        lambda m: int(m * MAX_SOLARIZE_ADD),
        False,
    ),
}
OP_NAMES = tuple(OPS)


def apply_op(
    image: Image.Image, name: str, rng: np.random.Generator, magnitude: float = MAGNITUDE
) -> Image.Image:
    """One RandAugment op at `magnitude`; a signed op is negated with probability 1/2."""
    op, value_at, signed = OPS[name]
    value = value_at(magnitude / MAX_MAGNITUDE)
    if signed and rng.random() < 0.5:
        value = -value
    return op(image, value, rng)


def rand_augment(
    image: Image.Image,
    rng: np.random.Generator,
    num_ops: int = NUM_OPS,
    magnitude: float = MAGNITUDE,
) -> Image.Image:
    """RandAugment: `num_ops` ops drawn uniformly from the 16 (with replacement), each applied.
    Every random choice comes from `rng` (the pipeline's per-(seed, step, row) generator)."""
    for _ in range(num_ops):
        name = OP_NAMES[int(rng.integers(len(OP_NAMES)))]
        image = apply_op(image, name, rng, magnitude)
    return image


# --- mixup -----------------------------------------------------------------------------------
def mixup_lambda(seed: int, step: int, alpha: float = MIXUP_ALPHA) -> float:
    """The mixup weight of train step `step`: Beta(alpha, alpha) from a generator seeded by
    (seed, step). Every rank (and every decoding worker) gets the same lambda for a step, so the
    global batch is mixed with one lambda, as on one device; upstream's PyTorch draws a
    lambda per rank, so its multi-GPU global batch mixes with several."""
    return float(np.random.default_rng([seed, step, MIXUP_STREAM]).beta(alpha, alpha))


def soft_targets(targets: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Integer labels [B] -> float32 one-hot rows [B, num_classes]; soft rows pass through."""
    targets = np.asarray(targets)
    if targets.ndim == 2:
        return targets.astype(np.float32, copy=False)
    one_hot = np.zeros((len(targets), num_classes), np.float32)
    one_hot[np.arange(len(targets)), targets] = 1.0
    return one_hot


def mixup(batch: dict, lam: float) -> dict:
    """lam * batch + (1 - lam) * batch rolled by one row (inputs and soft targets); the weights
    are kept. The roll is over this rank's local rows only (as upstream's PyTorch does), so
    which pairs mix depends on the number of ranks."""
    lam = np.float32(lam)
    inputs = np.asarray(batch["inputs"], np.float32)
    targets = soft_targets(batch["targets"])
    mixed = dict(batch)
    mixed["inputs"] = lam * inputs + (1 - lam) * np.roll(inputs, 1, axis=0)
    mixed["targets"] = lam * targets + (1 - lam) * np.roll(targets, 1, axis=0)
    return mixed


def mixup_batch(batch: dict, seed: int, step: int, alpha: float = MIXUP_ALPHA) -> dict:
    """The pipeline's per-batch hook (`input_pipeline.Mixup`): mixup with step `step`'s lambda."""
    return mixup(batch, mixup_lambda(seed, step, alpha))
