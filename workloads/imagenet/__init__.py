"""ImageNet-2012 and ImageNet-v2: the data that imagenet_resnet and imagenet_vit share.

Not a workload (no SPEC): its `input_pipeline.py` is found through both workloads'
`SPEC.dataset = "imagenet"`; `prepare.py` builds the data from the official archives.
"""
