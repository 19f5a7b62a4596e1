"""CPU speed-ups for the embedded model that do not change its outputs.

The output projection (``lm_head``, vocab x hidden: 49152 x 576 for SmolLM2) is the
single largest matmul of a decode step. On CPU, PyTorch's default fp32 GEMM handles
this tall, skinny shape poorly; oneDNN's linear kernel runs it much faster. The
results agree to float rounding, so greedy outputs are unchanged.
"""

from __future__ import annotations

import types


def use_onednn_lm_head(model) -> bool:
    """Route ``model.lm_head`` through oneDNN when on CPU in fp32 and the kernel is
    present and agrees with ``F.linear`` on a probe; otherwise leave it alone. Returns
    whether it was switched."""
    import torch
    import torch.nn.functional as F

    head = getattr(model, "lm_head", None)
    weight = getattr(head, "weight", None)
    if weight is None or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    kernel = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if kernel is None:
        return False
    try:
        with torch.inference_mode():
            probe = torch.randn(2, 3, weight.shape[1])
            fast = kernel(probe, weight, head.bias, "none", [], "")
            if not torch.allclose(fast, F.linear(probe, weight, head.bias), atol=1e-3, rtol=1e-4):
                return False
    except Exception:  # an internal op: absent or different in other torch builds
        return False

    def forward(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)  # training or elsewhere: stock path
        return kernel(x, self.weight, self.bias, "none", [], "")

    head.forward = types.MethodType(forward, head)
    return True
