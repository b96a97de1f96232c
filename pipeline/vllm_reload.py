"""Loading a new policy's weights into a running vLLM engine, correctly on the CPU too.

vLLM's own ``reload_weights`` (0.32) leaves one thing stale on the CPU: a layer whose weights
the checkpoint does not hold is skipped, and the CPU keeps a packed copy of each linear
layer's weight in a oneDNN handle built at load time. With tied embeddings the LM head is
such a layer (its weight is the embedding's, saved once), so after a reload the input
embedding was new and the output projection old: log-probabilities 1.1 nats away from a
fresh engine's on a perturbed Qwen2 (measured; the other layers matched exactly). Here the
embedding and LM head layers, the ones that keep their weight beside their handle, get a new
handle from the new weight.

A second one on CPUs with native bfloat16 (AVX-512 BF16, AMX): for small GEMMs vLLM packs
the weight for its own kernel and turns the layer's bias into float32, from the bfloat16
values of a fresh load. A reload then copies the checkpoint's float32 bias into that float32
tensor unrounded, so a Qwen2-style model (biased q, k, v) was a slightly different network
after a reload: summed log-probs 0.04 nats from a fresh engine's on the test's chat model
(measured on an AMX Xeon; tokens still equal). Such biases are rounded through the engine's
dtype again, as a fresh load would have them.

A reload also logs warnings a fresh load does not, which read like failures and are not: one
per float32 tensor of the trainer's checkpoint rounded into the bfloat16 engine ("Attempted
to load weight ... with dtype torch.float32"; a fresh load rounds the same way, silently),
and "Failed to load weights" for the rotary embedding (no weights, only a computed cache)
and a tied LM head (its weight is the embedding's; rebuilt below). Those, and only those,
are filtered out while the reload runs; any other mismatch still warns.

The class is mixed into vLLM's worker (``worker_extension_cls``) and called through
``LLM.collective_rpc("reload_policy", ...)``; ``tests/test_policy_engine.py`` compares a
reloaded engine with a fresh one, so a vLLM upgrade that changes this is caught.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

QUALNAME = "pipeline.vllm_reload.PolicyReload"
# The loggers (vLLM 0.32) of the two warnings filtered during a reload.
_DTYPE_LOGGER = "vllm.model_executor.models.utils"
_LAYERWISE_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


class ExpectedReloadWarnings(logging.Filter):
    """Drops the warnings a correct reload of a float32 checkpoint into an engine of
    ``engine_dtype`` logs (see the module's docstring); passes everything else."""

    def __init__(self, engine_dtype, tied_lm_head: bool) -> None:
        super().__init__()
        self.engine_dtype, self.tied_lm_head = engine_dtype, tied_lm_head

    def filter(self, record: logging.LogRecord) -> bool:
        import torch

        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("Attempted to load weight") and len(args) == 3:
            return not (args[1] == torch.float32 and args[2] == self.engine_dtype)
        if record.msg == "%s: Failed to load weights" and len(args) == 1:
            layer = str(args[0])
            return not (layer.endswith("RotaryEmbedding")
                        or (layer == "ParallelLMHead" and self.tied_lm_head))
        return True


@contextlib.contextmanager
def expected_warnings_filtered(engine_dtype, tied_lm_head: bool) -> Iterator[None]:
    quiet = ExpectedReloadWarnings(engine_dtype, tied_lm_head)
    loggers = [logging.getLogger(name) for name in (_DTYPE_LOGGER, _LAYERWISE_LOGGER)]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)


class PolicyReload:
    def reload_policy(self, weights_path: str) -> int:
        """Reload from ``weights_path``; the number of CPU GEMM handles rebuilt."""
        import torch
        from vllm.platforms import current_platform

        tied = bool(getattr(self.model_config.hf_text_config, "tie_word_embeddings", False))
        with expected_warnings_filtered(self.model_config.dtype, tied):
            self.reload_weights(weights_path=weights_path)
        if not current_platform.is_cpu():
            return 0
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

        model = self.model_runner.get_model()
        dtype = self.model_config.dtype
        if dtype != torch.float32:
            with torch.no_grad():
                for module in model.modules():
                    bias = getattr(module, "bias", None)
                    if hasattr(module, "cpu_linear") and isinstance(bias, torch.Tensor) \
                            and bias.dtype == torch.float32:
                        bias.copy_(bias.to(dtype).to(torch.float32))
        rebuilt = 0
        for module in model.modules():
            # The embedding and the LM head (its subclass) are dispatched with
            # remove_weight=False: their handle is a copy beside the weight. Linear layers
            # hand their weight to the handle and were rebuilt by the reload itself.
            if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear") \
                    and isinstance(module.weight, torch.Tensor) and module.weight.numel():
                dispatch_cpu_unquantized_gemm(module, remove_weight=False)
                rebuilt += 1
        return rebuilt
