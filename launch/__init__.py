"""Launchers: torchrun command lines (this file); submitit/Slurm sweeps are planned here too."""
