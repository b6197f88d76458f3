"""One Trainer for every stage: lm-pretrain, lm-sft, vlm-pretrain, vlm-sft.

    from tabvlm.train import TrainConfig, Trainer
    cfg = load(TrainConfig, "configs/quickstart.yaml", ["max_steps=100"])
    result = Trainer(cfg).fit()          # or Trainer(cfg, resume=True)

Modules: `config.py` (TrainConfig, stage defaults), `data.py` (the sharded, resumable sample
stream), `loss.py` (the one loss path), `checkpoint.py` (what a checkpoint holds, atomic
folders, recovery), `distributed.py` (device, ranks, collectives), `logger.py` (TensorBoard,
wandb), `reading.py` (the reading head), `trainer.py` (the step and the loop). Command:
`tabvlm train`.

What a stage changes: the data it reads and which parts of the model train (`STAGE_TRAINS`,
overridable with `train_vision` / `train_projector` / `train_lm`). Everything else is shared:
- Precision: bf16 autocast on CUDA (the first step checks the logits really are bf16), fp32 on CPU.
- AdamW; no weight decay on norms, biases and embeddings; linear warmup then cosine decay to
  `min_lr_ratio * lr`; gradient accumulation; clipping; optional `torch.compile`.
- The loss is the mean over every target token of the *global* batch (all micro-steps, all
  ranks), so 1 process with batch 4 and 2 processes with batch 2 take the same step. The LM
  head runs only where there is a target (`LossModule`): most of a table sample is image and
  prompt tokens, and the 12k-token head is most of a small model's compute.
- DDP through `torchrun` (nccl on GPU, gloo on CPU). Sample g of the stream belongs to rank
  g % world_size; only rank 0 logs, evaluates and writes.
- Checkpoints: `out_dir/checkpoints/step-NNNNNNN/` with model.safetensors, config.json,
  tokenizer.json, train_config.yaml, metrics.json and trainer_state.pt (optimizer, scheduler,
  RNG, step, samples consumed: loaded with `weights_only=True`). Written to a temporary folder,
  sealed by a manifest.json (size and sha256 of each file), then renamed; a kill at any point
  leaves the old checkpoint or the new one, and the next start puts right what it left
  (`checkpoint.recover`). The last `keep_last` are kept. A resume takes the newest checkpoint
  whose files match its manifest, with a warning for each damaged one it skips, and restarts
  the data stream at the sample after the last one consumed: the run continues exactly.
- Config values are checked on load (`TrainConfig.__post_init__`), the device and a probe
  file in out_dir when the Trainer starts: a bad value is a one-line ConfigError before any step.
- A non-finite loss or gradient stops the run before the optimizer step (TrainingError), the
  last good checkpoint untouched.
- Logs: TensorBoard scalars, a tqdm bar with ETA (on a terminal; in a log file a plain progress
  line now and then instead, `tabvlm.progress`), a line every `log_every` steps with loss,
  tokens/s and MFU. MFU = 6 * parameters * tokens/s / peak FLOP/s (the 6N-per-token estimate:
  forward 2N, backward 4N; attention and the vision tower's per-patch cost are left out, so it
  is a slight under-estimate). `peak_flops` None: 989e12 on CUDA (H100 SXM bf16 dense), and no
  MFU on CPU.
"""

from tabvlm.train.checkpoint import TrainingError, checkpoints, load_state
from tabvlm.train.config import STAGE_TRAINS, EvalConfig, TrainConfig, build_model_config
from tabvlm.train.data import SampleSource, TrainStream
from tabvlm.train.loss import LossModule
from tabvlm.train.trainer import CUDA_PEAK_FLOPS, Trainer, TrainResult, lr_factor, param_groups

__all__ = [
    "CUDA_PEAK_FLOPS",
    "STAGE_TRAINS",
    "EvalConfig",
    "LossModule",
    "SampleSource",
    "TrainConfig",
    "TrainResult",
    "TrainStream",
    "Trainer",
    "TrainingError",
    "build_model_config",
    "checkpoints",
    "load_state",
    "lr_factor",
    "param_groups",
]
