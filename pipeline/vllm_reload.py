"""Loading a new policy's weights into a running vLLM engine, correctly on the CPU too.

vLLM's own ``reload_weights`` (0.32) leaves one thing stale on the CPU: a layer whose weights
the checkpoint does not hold is skipped, and the CPU keeps a packed copy of each linear
layer's weight in a oneDNN handle built at load time. With tied embeddings the LM head is
such a layer (its weight is the embedding's, saved once), so after a reload the input
embedding was new and the output projection old: log-probabilities 1.1 nats away from a
fresh engine's on a perturbed Qwen2 (measured; the other layers matched exactly). Here every
layer that keeps its weight beside its handle gets a new handle from the new weight.

The class is mixed into vLLM's worker (``worker_extension_cls``) and called through
``LLM.collective_rpc("reload_policy", ...)``; ``tests/test_policy_engine.py`` compares a
reloaded engine with a fresh one, so a vLLM upgrade that changes this is caught.
"""

from __future__ import annotations

QUALNAME = "pipeline.vllm_reload.PolicyReload"


class PolicyReload:
    def reload_policy(self, weights_path: str) -> int:
        """Reload from ``weights_path``; the number of CPU GEMM handles rebuilt."""
        import torch
        from vllm.platforms import current_platform

        self.reload_weights(weights_path=weights_path)
        if not current_platform.is_cpu():
            return 0
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

        rebuilt = 0
        for module in self.model_runner.get_model().modules():
            weight = getattr(module, "weight", None)
            # Layers whose weight was moved into the handle (remove_weight=True) have an
            # empty weight and were rebuilt by the reload itself.
            if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) \
                    and weight.ndim == 2 and weight.numel():
                dispatch_cpu_unquantized_gemm(module, remove_weight=False)
                rebuilt += 1
        return rebuilt
