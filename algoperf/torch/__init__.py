"""PyTorch plumbing: process group and device setup, the torch Workload base, the runner backend.

The only place in `algoperf/` that imports torch models or creates a process group.
"""
