"""Several processes through Hugging Face ``accelerate``: who is who, and what ranks must agree on.

rlhf-gym has no launcher, collective or parameter server of its own. A run started by
``torchrun --nproc_per_node N`` or ``accelerate launch --num_processes N`` gives each process a
rank; ``accelerate`` reads it from the environment variables those launchers set, picks the
backend (NCCL on GPUs, gloo on CPUs) and wraps the trained module in DDP so that
``backward()`` all-reduces its gradients. Weight-sharding engines (FSDP, DeepSpeed ZeRO-3) are
refused with the reason (:func:`check_sharding`); ZeRO-1/2 are not refused but not tested.

What PPO does with it (:mod:`rlhf_gym.agents.ppo`):

* **Rows.** ``num_envs`` is the *global* batch: each rank runs its own vector environment of
  ``num_envs / N`` rows (and ``num_envs / (N·num_minibatches)`` rows per minibatch), so the
  update sees the same global batch as one process would. A world size that does not divide
  them is an error.
* **Loss scale.** Each per-token mean is a sum over the rank's tokens divided by the *global*
  token count of the minibatch (times ``N``, since DDP averages gradients): the gradient is
  that of one process on the global minibatch (``tests/test_distributed.py``).
* **Seeds.** Rank ``r`` draws its prompts from the episode seeds one process would give its
  rows ``r·B/N … (r+1)·B/N − 1``; it samples tokens with the seed ``seed + 1,000,003·r``
  (rank 0's equals a one-process run's). Weights start equal on every rank (same torch seed;
  DDP also broadcasts rank 0's). Minibatch order: the same permutation of local rows on
  every rank.
* **Main process only.** TensorBoard, checkpoints, the progress bar and the held-out
  evaluation run on rank 0; logged scalars are averaged over ranks.
* **Agreement.** Every rank's config must be equal (checked at start: the message names the
  fields that differ).
* **Exit.** The process group that ``accelerate`` opened is destroyed when the interpreter
  exits (an ``atexit`` handler, :func:`destroy_at_exit`), while Python is still whole: gloo's
  worker threads left running into interpreter finalisation can abort a rank with
  "terminate called without an active exception" after its work is done.

Only PPO trains with several processes; the other agents say so.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from typing import Any

import torch

MIXED_PRECISION = ("no", "bf16", "fp16")


def world_size() -> int:
    """The number of processes of this run, from the launcher's ``WORLD_SIZE`` (1 if none)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    """This process's rank, from the launcher's ``RANK`` (0 without a launcher)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """Whether this process is rank 0 (always true without a launcher)."""
    return rank() == 0


def make_accelerator(device: str) -> Any:
    """With several processes, an ``accelerate.Accelerator`` (``"cpu"``: gloo); in one process,
    :class:`OneProcess`, which has the few members the agents use and no global state.

    ``accelerate`` keeps one state per process that a second ``Accelerator`` may not change
    (device kind, mixed precision), while one process may build several agents with different
    settings (``rlhf-gym compare``, the notebooks): so one process does not go through it.
    Device placement stays the agent's (the environment decides where its models live), and
    mixed precision is the agent's own autocast (``accelerate launch --mixed_precision`` is
    honoured on top of it).
    """
    if world_size() == 1:
        return OneProcess()
    from accelerate import Accelerator

    from rlhf_gym.envs.lm import resolve_device

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if not cpu and device != "auto":
        resolve_device(device)  # a clear error for a bad device name
    accelerator = Accelerator(cpu=cpu, device_placement=False)
    destroy_at_exit()
    check_sharding(accelerator)
    return accelerator


_EXIT_HANDLER_REGISTERED = False


def destroy_at_exit() -> None:
    """Destroy the default process group when the interpreter exits (registered once).

    PyTorch does not do it itself: a process that ends with its group alive leaves gloo's
    threads to be torn down during interpreter finalisation, which now and then aborts the
    rank (SIGABRT) after its work is done. A group the caller destroyed already is left alone.
    """
    global _EXIT_HANDLER_REGISTERED
    if not _EXIT_HANDLER_REGISTERED:
        atexit.register(_destroy_process_group)
        _EXIT_HANDLER_REGISTERED = True


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_sharding(accelerator: Any) -> None:
    """Refuse what shards the *weights* (FSDP, DeepSpeed ZeRO-3): each rank samples its rows
    token by token with the whole policy, at its own pace (its responses end when they end),
    so no rank may need another's shard mid-rollout. DDP and ZeRO-1/2 (which shard gradients
    and optimizer states only) keep whole weights on every rank."""
    kind = str(getattr(accelerator, "distributed_type", ""))
    stage = None
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        stage = plugin.deepspeed_config.get("zero_optimization", {}).get("stage")
    if kind.endswith("FSDP") or stage == 3:
        what = "FSDP" if kind.endswith("FSDP") else "DeepSpeed ZeRO-3"
        raise ValueError(
            f"{what} shards the weights, but each rank's rollout samples with the whole "
            "policy; use DDP (accelerate's multi-GPU config), and LoRA (--lora-r), gradient "
            "checkpointing or bf16 weights to fit a larger model on each GPU"
        )


class OneProcess:
    """The members of ``accelerate.Accelerator`` the agents use, for a run of one process."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    def prepare(self, *objects: Any) -> Any:
        """The objects themselves (nothing to wrap)."""
        return objects if len(objects) > 1 else objects[0]

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``."""
        loss.backward()

    def clip_grad_norm_(self, parameters: Any, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_``."""
        return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``mixed_precision`` on ``device`` (``None`` for ``"no"``)."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"mixed_precision={mixed_precision!r} is not one of {list(MIXED_PRECISION)}"
        )
    if mixed_precision == "no":
        return None
    if mixed_precision == "fp16" and device.type != "cuda":
        raise ValueError("mixed_precision='fp16' needs a CUDA device; use 'bf16' on the CPU")
    return torch.bfloat16 if mixed_precision == "bf16" else torch.float16


def check_same_config(accelerator: Any, config: Any) -> None:
    """Raise ``ValueError`` on every rank if any rank's config differs from rank 0's."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import gather_object

    mine = dataclasses.asdict(config)
    everyone = gather_object([mine])
    differ = sorted({k for other in everyone for k in mine if other.get(k) != everyone[0].get(k)})
    if differ:
        raise ValueError(
            "the ranks were started with different configs (fields "
            f"{differ}: {[{k: o.get(k) for k in differ} for o in everyone]}); every process "
            "must get the same options"
        )


def check_divisible(num_envs: int, num_minibatches: int, world: int) -> None:
    """Raise ``ValueError`` unless ``world`` processes can share the batch and its minibatches."""
    if num_envs % (world * num_minibatches):
        raise ValueError(
            f"num_envs={num_envs} (the global batch) must be divisible by the number of "
            f"processes ({world}) × num_minibatches ({num_minibatches}) = "
            f"{world * num_minibatches}, so that every rank gets equal rows and minibatches"
        )


def mean_over_ranks(accelerator: Any, stats: dict[str, float]) -> dict[str, float]:
    """``stats`` averaged over the ranks (unchanged in one process); same keys on every rank."""
    if accelerator.num_processes == 1 or not stats:
        return stats
    keys = sorted(stats)
    values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
    values = accelerator.reduce(values.to(accelerator.device), reduction="mean").cpu()
    return {k: float(v) for k, v in zip(keys, values, strict=True)}


def sum_over_ranks(accelerator: Any, x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over the ranks (``x`` itself in one process)."""
    if accelerator.num_processes == 1:
        return x
    return accelerator.reduce(x.detach().clone(), reduction="sum")
