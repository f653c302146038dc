"""A small fastMRI knee single-coil release, for tests: h5 volumes in the release's format packed
into `knee_singlecoil_{train,val}.tar.xz`, run through `workloads.fastmri.prepare`.

Sizes: k-space 40 rows x 36 or 38 columns (the release: 640 x ~368, widths vary by volume),
`reconstruction_esc` 32 x 32 (the release: 320 x 320), so the pipeline needs `image_size=32`
(`--workload_options image_size=32,num_workers=0`). The slices are random ellipse phantoms whose
k-space the pipeline's inverse FFT recovers exactly; `reconstruction_esc` is their magnitude,
centre-cropped, as the release's is the fully sampled reconstruction. The validation split is the
first NUM_VALIDATION_FILES sorted val volumes (written to the archive out of order), the rest
are the test split.
"""

from __future__ import annotations

import io
import math
import pathlib
import tarfile

import numpy as np

from algoperf.workloads.fastmri import input_pipeline as pipeline
from algoperf.workloads.fastmri import prepare

KSPACE_ROWS = 40
KSPACE_COLUMNS = (36, 38)
IMAGE_SIZE = 32
"""Side of `reconstruction_esc` in the fixture: the `image_size` option to use with it."""
TRAIN_SLICES = (4, 5, 3)
VAL_SLICES = (5, 4, 3, 4)  # in sorted file order
NUM_VALIDATION_FILES = 2
SIZES = {
    "train": sum(TRAIN_SLICES),
    "validation": sum(VAL_SLICES[:NUM_VALIDATION_FILES]),
    "test": sum(VAL_SLICES[NUM_VALIDATION_FILES:]),
}
"""Slices per split (12 / 9 / 7): three train volumes; validation two, test two val volumes."""
PIPELINE_OPTIONS = {"image_size": IMAGE_SIZE, "num_workers": 0}


def phantom(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A random sum of ellipses (a knee-free stand-in for anatomy), float32 [rows, cols]."""
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : cols * 1j]
    image = np.zeros((rows, cols))
    for _ in range(6):
        cy, cx = rng.uniform(-0.4, 0.4, 2)
        ay, ax = rng.uniform(0.15, 0.7, 2)
        angle = rng.uniform(0, math.pi)
        u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
        v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
        image += rng.uniform(0.2, 1.0) * ((u / ax) ** 2 + (v / ay) ** 2 <= 1)
    return image.astype(np.float32)


def kspace_of(image: np.ndarray) -> np.ndarray:
    """The centred k-space whose reconstruction (ifftshift -> IFFT -> fftshift -> x sqrt(H*W))
    is `image`: complex64."""
    rows, cols = image.shape[-2:]
    spectrum = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1))), axes=(-2, -1))
    return (spectrum / math.sqrt(rows * cols)).astype(np.complex64)


def volume_bytes(num_slices: int, cols: int, rng: np.random.Generator) -> bytes:
    """One h5 volume as the release stores it: `kspace` complex64 [slices, rows, cols],
    `reconstruction_esc` float32 [slices, 32, 32], attributes `max`, `norm`, `acquisition`,
    `patient_id`. Values on the release's scale (~1e-4)."""
    import h5py

    images = 1e-4 * np.stack([phantom(KSPACE_ROWS, cols, rng) for _ in range(num_slices)])
    images += 2e-6 * rng.standard_normal(images.shape).astype(np.float32)  # scanner noise
    esc = pipeline.center_crop(np.abs(images), IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as volume:
        volume.create_dataset("kspace", data=kspace_of(images))
        volume.create_dataset("reconstruction_esc", data=esc)
        volume.attrs["max"] = np.float64(esc.max())
        volume.attrs["norm"] = np.float64(np.linalg.norm(esc))
        volume.attrs["acquisition"] = "CORPD_FBK"
        volume.attrs["patient_id"] = f"{rng.integers(1 << 60):x}"
    return buffer.getvalue()


def write_archive(path: pathlib.Path, folder: str, volumes: dict[str, bytes]) -> None:
    """A `.tar.xz` holding `<folder>/<name>` for each volume, in the given order."""
    with tarfile.open(path, "w:xz", preset=0) as tar:
        directory = tarfile.TarInfo(folder)
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, content in volumes.items():
            member = tarfile.TarInfo(f"{folder}/{name}")
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def write_release(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write the two release archives into `folder` (the --archive_dir); returns `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train = {
        f"file1000{i:03d}.h5": volume_bytes(n, KSPACE_COLUMNS[i % 2], rng)
        for i, n in enumerate(TRAIN_SLICES)
    }
    val = {
        f"file1001{i:03d}.h5": volume_bytes(n, KSPACE_COLUMNS[i % 2], rng)
        for i, n in enumerate(VAL_SLICES)
    }
    val = dict(reversed(val.items()))  # the split must come from sorting, not archive order
    write_archive(folder / prepare.ARCHIVES[pipeline.TRAIN_DIR], "singlecoil_train", train)
    write_archive(folder / prepare.ARCHIVES[pipeline.VAL_DIR], "singlecoil_val", val)
    return folder


def write_fixture(folder: pathlib.Path) -> pathlib.Path:
    """The prepared fixture (archives written to `folder/archives`, run through `prepare`);
    returns the --data_dir. Use the pipeline with `PIPELINE_OPTIONS` (image_size=32)."""
    archives = write_release(folder / "archives")
    prepare.prepare(
        folder, archives, expected_counts=SIZES, num_validation_files=NUM_VALIDATION_FILES,
        log=lambda line: None,
    )  # fmt: skip
    return folder
