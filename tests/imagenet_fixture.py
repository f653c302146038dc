"""The ImageNet fixtures' old import path for tests and scripts; they live in
`workloads/imagenet/testing.py`, next to the data they imitate."""

from algoperf.workloads.imagenet.testing import (  # noqa: F401
    MAX_CLASSES,
    MAX_PER_CLASS,
    SPLIT_CODES,
    decode_ids,
    jpeg_bytes,
    make_imagenet_archives,
    make_imagenet_tree,
    wnid,
)
