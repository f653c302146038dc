"""Launchers: torchrun command lines, and sweeps run on Slurm (submitit) or on one machine.

sweep.py (the sweep definition), trial.py (one trial as a child process), slurm.py (submitit job
arrays, checkpoint and requeue), local.py (this machine), state.py (status, cancel), cli.py
(`algoperf launch`).
"""
