"""The runner's PyTorch backend: numpy-pair keys, CUDA sync, compile policy, rank agreement."""

from __future__ import annotations

import gc
import logging
import pickle

import numpy as np
import torch
import torch.distributed as dist

from algoperf import rng as np_rng
from algoperf.torch.distributed import init_process_group
from algoperf.torch.workload import unwrap

log = logging.getLogger(__name__)


class TorchBackend:
    name = "pytorch"

    def __init__(self) -> None:
        info = init_process_group()
        self.info = info
        self.rank = info.rank
        self.world_size = info.world_size
        self.device_count = info.world_size
        self.device = info.device
        self._cuda = info.device.type == "cuda"
        self._step_keys: np_rng.StepKeys | None = None

    # Keys are int pairs, as in upstream's PyTorch path (submissions may read rng[0]).
    def prng_key(self, seed: int) -> np.ndarray:
        return np_rng.prng_key(seed)

    def split(self, key, num: int) -> list:
        return list(np_rng.split(key, num))

    def step_rngs(self, key, step: int):
        """`split(fold_in(key, step), 4)`, served from blocks derived in numpy (rng.StepKeys)."""
        keys = self._step_keys
        if keys is not None and keys.key is key:  # every step but a block's first: a lookup
            offset = step - keys.start
            if 0 <= offset < len(keys.rows):
                return keys.rows[offset]
        if keys is None or not keys.matches(key):
            keys = self._step_keys = np_rng.StepKeys(key)
        return keys.for_step(step)

    def step_rng_block(self, key, step: int):
        self.step_rngs(key, step)  # (re)derives the block that holds `step` when needed
        return self._step_keys.start, self._step_keys.rows

    @property
    def needs_sync(self) -> bool:
        return self._cuda  # CUDA kernels are queued; CPU ops run before the call returns

    def sync(self, *trees) -> None:
        del trees
        if self._cuda:
            torch.cuda.synchronize(self.device)

    def agree_max(self, values: list[float]) -> list[float]:
        if not (self.info.use_ddp and dist.is_initialized()):
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.cpu().tolist()

    def compile_choice(self, requested: bool | None) -> tuple[bool, str]:
        """Whether to torch.compile, and why: `requested` (--torch_compile) if given, else on
        for CUDA and off on CPUs, where the compiled step measured slower than eager for every
        workload (docs/workloads.md, "Compile policy")."""
        if requested is not None:
            return requested, f"--torch_compile {str(requested).lower()}"
        if self._cuda:
            return True, "the default on CUDA devices (--torch_compile false runs eager)"
        return False, (
            "the default on CPUs, where the compiled step measured slower than eager "
            "(--torch_compile true compiles)"
        )

    def prepare_model(self, workload, params, *, compile_model: bool):
        """torch.compile per the workload's policy; compilation itself runs on the clock."""
        if not compile_model:
            return params
        if workload.spec.compile_loss and not hasattr(
            workload.loss_fn, "_torchdynamo_orig_callable"
        ):
            # The policy's "also compile loss_fn" (docs/workloads.md): the instance's loss_fn,
            # which the submission calls, becomes the compiled one (its compile is on the clock).
            workload.loss_fn = torch.compile(workload.loss_fn)
        if not workload.spec.compile_model:
            log.info("%s: torch.compile skipped (workload policy).", workload.spec.name)
            return params
        return torch.compile(params)

    def reset_memory(self) -> None:
        gc.collect()
        if self._cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    # --- checkpoints (algoperf/checkpoint.py) ---------------------------------------------
    def save_state(self, folder, variables) -> None:
        """Model (unwrapped state_dict), optimizer entries' state_dicts, model state, RNG."""
        optimizer = variables.optimizer_state
        if not isinstance(optimizer, dict):
            raise TypeError(
                "a PyTorch submission's optimizer state must be a dict "
                "(docs/rules.md, Submission API)."
            )
        skipped = [k for k, v in optimizer.items() if not hasattr(v, "state_dict")]
        if skipped:
            log.warning("optimizer_state entries without state_dict are not saved: %s", skipped)
        payload = {
            "model": unwrap(variables.params).state_dict(),
            "optimizer": {k: v.state_dict() for k, v in optimizer.items() if k not in skipped},
            "model_state": variables.model_state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self._cuda else None,
        }
        torch.save(payload, folder / "state.pt")

    def load_state(self, folder, variables):
        from algoperf.checkpoint import CheckpointError

        try:
            payload = torch.load(folder / "state.pt", map_location=self.device, weights_only=False)
            unwrap(variables.params).load_state_dict(payload["model"])
            for key, value in variables.optimizer_state.items():
                if key in payload["optimizer"]:
                    value.load_state_dict(payload["optimizer"][key])
        except (
            OSError,
            RuntimeError,
            KeyError,
            EOFError,
            ValueError,
            pickle.UnpicklingError,
        ) as error:
            raise CheckpointError(
                f"checkpoint {folder} could not be loaded ({type(error).__name__}: "
                f"{str(error).splitlines()[0]}); delete it to restart the trial."
            ) from None
        variables.model_state = payload["model_state"]
        torch.set_rng_state(payload["torch_rng"])
        if self._cuda and payload["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        return variables

    def barrier(self) -> None:
        if self.info.use_ddp and dist.is_initialized():
            dist.barrier()


def make_backend() -> TorchBackend:
    return TorchBackend()
