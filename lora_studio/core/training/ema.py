"""A moving average of the trained LoRA weights: what a run saves when ``ema_decay`` > 0.

At a constant learning rate the weights at the last step are one draw from where the optimizer wanders; on
a small dataset that draw shows (the demo: the same colour cast on every picture of one adapter, another cast
with another seed). The average over the last ~1/(1 - decay) updates is a steadier adapter. Training itself
uses the live weights; the average is swapped in for the final samples and the saved files, and it travels
in checkpoints so a resumed run ends with the same file.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class LoraEma:
    def __init__(self, params, decay: float):
        self.params = list(params)
        self.decay = float(decay)
        self.updates = 0
        self.shadow = [p.detach().float().clone() for p in self.params]

    def rate(self) -> float:
        # Warm-up: the first updates follow the weights closely, so the freshly initialised adapter (B = 0)
        # does not linger in the average (the same schedule as diffusers' EMAModel).
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """After each optimizer update."""
        self.updates += 1
        d = self.rate()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - d)

    @contextmanager
    @torch.no_grad()
    def applied(self):
        """The averaged weights in the model for the duration (the live ones come back afterwards)."""
        live = [p.detach().clone() for p in self.params]
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(p.dtype))
        try:
            yield
        finally:
            for p, v in zip(self.params, live):
                p.copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.shadow = [s.to(p.device, torch.float32) for s, p in zip(state["shadow"], self.params)]
