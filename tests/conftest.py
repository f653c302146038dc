"""Shared fixtures: a real single-node Slurm and the small sweep of the launch tests."""

from slurm_fixture import local_reference, mnist_dir, slurm_cluster  # noqa: F401
